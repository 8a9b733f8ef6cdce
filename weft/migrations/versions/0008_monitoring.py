"""drift alerts, webhooks, events, deliveries

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 10:50:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table('drift_alert',
    sa.Column('id', S(), nullable=False), sa.Column('user_id', S(), nullable=False),
    sa.Column('endpoint_id', S(), nullable=True), sa.Column('model_id', S(), nullable=True),
    sa.Column('model_name', S(), nullable=True), sa.Column('severity', S(), nullable=False),
    sa.Column('type', S(), nullable=False), sa.Column('description', S(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False), sa.Column('status', S(), nullable=False),
    sa.Column('recommended_action', S(), nullable=True), sa.Column('report_key', S(), nullable=True),
    sa.Column('decisions', sa.JSON(), nullable=False),
    sa.Column('detected_at', sa.DateTime(), nullable=False), sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ), sa.PrimaryKeyConstraint('id'))
    for column in ('user_id', 'endpoint_id', 'model_id', 'detected_at'):
        op.create_index(op.f(f'ix_drift_alert_{column}'), 'drift_alert', [column], unique=False)
    op.create_table('webhook',
    sa.Column('id', S(), nullable=False), sa.Column('user_id', S(), nullable=False),
    sa.Column('url', S(), nullable=False), sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('secret_block', S(), nullable=False), sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False), sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ), sa.PrimaryKeyConstraint('id'))
    op.create_index(op.f('ix_webhook_user_id'), 'webhook', ['user_id'], unique=False)
    op.create_table('event',
    sa.Column('id', S(), nullable=False), sa.Column('key', S(), nullable=False),
    sa.Column('user_id', S(), nullable=True), sa.Column('type', S(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False), sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'), sa.UniqueConstraint('key'))
    for column in ('user_id', 'type', 'created_at'):
        op.create_index(op.f(f'ix_event_{column}'), 'event', [column], unique=False)
    op.create_table('webhook_delivery',
    sa.Column('id', S(), nullable=False), sa.Column('webhook_id', S(), nullable=False),
    sa.Column('event_id', S(), nullable=False), sa.Column('event_type', S(), nullable=False),
    sa.Column('status', S(), nullable=False), sa.Column('attempts', sa.JSON(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False), sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'), sa.UniqueConstraint('webhook_id', 'event_id'))
    for column in ('webhook_id', 'event_id', 'next_attempt_at'):
        op.create_index(op.f(f'ix_webhook_delivery_{column}'), 'webhook_delivery', [column], unique=False)


def downgrade() -> None:
    for table in ('webhook_delivery', 'event', 'webhook', 'drift_alert'):
        op.drop_table(table)
