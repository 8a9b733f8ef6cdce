"""evaluations and the promoted flag of models

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 10:05:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('evaluation',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('model_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('base_model_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('dataset_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('test_set_path', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('base_model_name', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('fine_tuned_name', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('results', sa.JSON(), nullable=False),
    sa.Column('examples', sa.JSON(), nullable=False),
    sa.Column('benchmarks', sa.JSON(), nullable=False),
    sa.Column('gate', sa.JSON(), nullable=False),
    sa.Column('promoted', sa.Boolean(), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_evaluation_user_id'), 'evaluation', ['user_id'], unique=False)
    op.create_index(op.f('ix_evaluation_model_id'), 'evaluation', ['model_id'], unique=False)
    with op.batch_alter_table('model') as batch:
        batch.add_column(sa.Column('promoted', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('model') as batch:
        batch.drop_column('promoted')
    op.drop_index(op.f('ix_evaluation_model_id'), table_name='evaluation')
    op.drop_index(op.f('ix_evaluation_user_id'), table_name='evaluation')
    op.drop_table('evaluation')
