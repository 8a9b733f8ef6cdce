"""endpoints, replicas, inference records, clusters

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 10:15:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table('endpoint',
    sa.Column('id', S(), nullable=False), sa.Column('user_id', S(), nullable=False),
    sa.Column('model_id', S(), nullable=False), sa.Column('name', S(), nullable=False),
    sa.Column('status', S(), nullable=False), sa.Column('kind', S(), nullable=False),
    sa.Column('workflow_id', S(), nullable=True), sa.Column('pool', S(), nullable=True),
    sa.Column('engine', S(), nullable=True), sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('plan', sa.JSON(), nullable=False), sa.Column('proxy_url', S(), nullable=True),
    sa.Column('proxy_model', S(), nullable=True), sa.Column('credential_id', S(), nullable=True),
    sa.Column('reason', S(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False), sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ), sa.PrimaryKeyConstraint('id'), sa.UniqueConstraint('name'))
    op.create_index(op.f('ix_endpoint_user_id'), 'endpoint', ['user_id'], unique=False)
    op.create_index(op.f('ix_endpoint_model_id'), 'endpoint', ['model_id'], unique=False)
    op.create_table('replica',
    sa.Column('id', S(), nullable=False), sa.Column('endpoint_id', S(), nullable=False),
    sa.Column('flow_run_id', S(), nullable=True), sa.Column('url', S(), nullable=True),
    sa.Column('state', S(), nullable=False), sa.Column('engine', S(), nullable=True),
    sa.Column('max_concurrency', sa.Integer(), nullable=False), sa.Column('last_seen', sa.DateTime(), nullable=True),
    sa.Column('reason', S(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False), sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'))
    op.create_index(op.f('ix_replica_endpoint_id'), 'replica', ['endpoint_id'], unique=False)
    op.create_index(op.f('ix_replica_flow_run_id'), 'replica', ['flow_run_id'], unique=False)
    op.create_table('inference_record',
    sa.Column('id', sa.Integer(), nullable=False), sa.Column('endpoint_id', S(), nullable=True),
    sa.Column('replica_id', S(), nullable=True), sa.Column('user_id', S(), nullable=True),
    sa.Column('route', S(), nullable=False), sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('tokens_in', sa.Integer(), nullable=False), sa.Column('tokens_out', sa.Integer(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False), sa.Column('error', S(), nullable=True),
    sa.Column('prompt', S(), nullable=True), sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'))
    op.create_index(op.f('ix_inference_record_endpoint_id'), 'inference_record', ['endpoint_id'], unique=False)
    op.create_index(op.f('ix_inference_record_created_at'), 'inference_record', ['created_at'], unique=False)
    op.create_table('cluster',
    sa.Column('id', S(), nullable=False), sa.Column('user_id', S(), nullable=True),
    sa.Column('name', S(), nullable=False), sa.Column('pool_name', S(), nullable=False),
    sa.Column('pool_type', S(), nullable=False), sa.Column('icon', S(), nullable=True),
    sa.Column('ingress_url', S(), nullable=True), sa.Column('config_block', S(), nullable=True),
    sa.Column('hardware', sa.JSON(), nullable=False), sa.Column('status', S(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'), sa.UniqueConstraint('pool_name'))
    op.create_index(op.f('ix_cluster_user_id'), 'cluster', ['user_id'], unique=False)


def downgrade() -> None:
    for table in ('cluster', 'inference_record', 'replica', 'endpoint'):
        op.drop_table(table)
