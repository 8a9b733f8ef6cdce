"""compute platforms and where (and at what price) each workflow runs

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 04:40:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table('platform_connection',
    sa.Column('name', S(), nullable=False), sa.Column('status', S(), nullable=False),
    sa.Column('reason', S(), nullable=True), sa.Column('pool_name', S(), nullable=False),
    sa.Column('secret_block', S(), nullable=True), sa.Column('connected_by', S(), nullable=True),
    sa.Column('last_verified', sa.DateTime(), nullable=True), sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name'))
    op.create_table('placement',
    sa.Column('workflow_id', S(), nullable=False), sa.Column('provider', S(), nullable=False),
    sa.Column('resource_id', S(), nullable=False), sa.Column('pool_name', S(), nullable=False),
    sa.Column('hourly_rate', sa.Float(), nullable=True), sa.Column('currency', S(), nullable=False),
    sa.Column('billing_increment', sa.Integer(), nullable=False), sa.Column('minimum_charge', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('workflow_id'))


def downgrade() -> None:
    op.drop_table('placement')
    op.drop_table('platform_connection')
