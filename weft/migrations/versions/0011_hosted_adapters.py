"""adapter revisions served by a replica of their base model

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 19:05:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table('hosted_adapter',
    sa.Column('replica_id', S(), nullable=False), sa.Column('revision_id', S(), nullable=False),
    sa.Column('name', S(), nullable=False), sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('replica_id', 'revision_id'))
    op.create_index(op.f('ix_hosted_adapter_revision_id'), 'hosted_adapter', ['revision_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_hosted_adapter_revision_id'), table_name='hosted_adapter')
    op.drop_table('hosted_adapter')
