"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)

    op.create_table('blobs',
    sa.Column('digest', sa.String(length=80), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('digest')
    )
    op.create_table('funders_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('effective_date', sa.Date(), nullable=True),
    sa.Column('digest', sa.String(length=80), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('funders_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_funders_versions_digest'), ['digest'], unique=False)
        batch_op.create_index(batch_op.f('ix_funders_versions_effective_date'), ['effective_date'], unique=False)

    op.create_table('plans',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('plan_status', sa.String(length=16), nullable=True),
    sa.Column('plan_date', sa.Date(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('inputs_digest', sa.String(length=80), nullable=False),
    sa.Column('originations_digest', sa.String(length=80), nullable=False),
    sa.Column('originations_format', sa.String(length=10), nullable=False),
    sa.Column('funders_digest', sa.String(length=80), nullable=False),
    sa.Column('funders_version_id', sa.Integer(), nullable=True),
    sa.Column('portfolio_digest', sa.String(length=80), nullable=True),
    sa.Column('portfolio_format', sa.String(length=10), nullable=True),
    sa.Column('exposures_digest', sa.String(length=80), nullable=True),
    sa.Column('exposures_format', sa.String(length=10), nullable=True),
    sa.Column('parent_id', sa.String(length=32), nullable=True),
    sa.Column('overrides', sa.JSON(), nullable=True),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('loan_count', sa.Integer(), nullable=False),
    sa.Column('objective', sa.Float(), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.Column('difference', sa.JSON(), nullable=True),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['funders_version_id'], ['funders_versions.id'], ),
    sa.ForeignKeyConstraint(['parent_id'], ['plans.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plans_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_plans_inputs_digest'), ['inputs_digest'], unique=False)
        batch_op.create_index(batch_op.f('ix_plans_parent_id'), ['parent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_plans_plan_date'), ['plan_date'], unique=False)
        batch_op.create_index(batch_op.f('ix_plans_status'), ['status'], unique=False)

    op.create_table('batch_days',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('plan_id', sa.String(length=32), nullable=False),
    sa.Column('run_at', sa.DateTime(), nullable=False),
    sa.Column('usage', sa.JSON(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], ),
    sa.PrimaryKeyConstraint('day')
    )
    op.create_table('plan_tables',
    sa.Column('plan_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('plan_id', 'name')
    )


def downgrade() -> None:
    op.drop_table('plan_tables')
    op.drop_table('batch_days')
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plans_status'))
        batch_op.drop_index(batch_op.f('ix_plans_plan_date'))
        batch_op.drop_index(batch_op.f('ix_plans_parent_id'))
        batch_op.drop_index(batch_op.f('ix_plans_inputs_digest'))
        batch_op.drop_index(batch_op.f('ix_plans_created_at'))

    op.drop_table('plans')
    with op.batch_alter_table('funders_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_funders_versions_effective_date'))
        batch_op.drop_index(batch_op.f('ix_funders_versions_digest'))

    op.drop_table('funders_versions')
    op.drop_table('blobs')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))

    op.drop_table('audit_log')
    op.drop_table('api_keys')
