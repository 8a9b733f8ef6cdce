"""workflow name and description (document 000's POST /workflows)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workflow') as batch:
        batch.add_column(sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(sa.Column('description', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workflow') as batch:
        batch.drop_column('description')
        batch.drop_column('name')
