"""a plan's bids file (per-loan prices of bidding funders)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bids_digest', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('bids_format', sa.String(length=10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_column('bids_format')
        batch_op.drop_column('bids_digest')
