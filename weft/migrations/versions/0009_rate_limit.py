"""rate-limit windows shared by the API processes

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:00:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rate_limit_window',
    sa.Column('window_number', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('identity', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('window_number', 'identity'))


def downgrade() -> None:
    op.drop_table('rate_limit_window')
