"""endpoint revisions, controller events and lease, URL-safe slugs, autoscaling bounds

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 19:40:00
"""
import json
import re
import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def _slug(name: str) -> str:  # a frozen copy of weft.ids.slug_of
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "endpoint"


def upgrade() -> None:
    op.create_table('revision',
    sa.Column('id', S(), nullable=False), sa.Column('endpoint_id', S(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False), sa.Column('model_id', S(), nullable=False),
    sa.Column('workflow_id', S(), nullable=True), sa.Column('engine', S(), nullable=True),
    sa.Column('pool', S(), nullable=True), sa.Column('plan', sa.JSON(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False), sa.Column('status', S(), nullable=False),
    sa.Column('changes', S(), nullable=True), sa.Column('traffic', sa.Integer(), nullable=False),
    sa.Column('traffic_changed_at', sa.DateTime(), nullable=False),
    sa.Column('replicas', sa.Integer(), nullable=False), sa.Column('scaled_at', sa.DateTime(), nullable=False),
    sa.Column('demand_at', sa.DateTime(), nullable=True), sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('next_start_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False), sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'), sa.UniqueConstraint('endpoint_id', 'number'), sa.UniqueConstraint('workflow_id'))
    op.create_index(op.f('ix_revision_endpoint_id'), 'revision', ['endpoint_id'], unique=False)
    op.create_table('endpoint_event',
    sa.Column('id', sa.Integer(), nullable=False), sa.Column('endpoint_id', S(), nullable=False),
    sa.Column('version', S(), nullable=True), sa.Column('action', S(), nullable=False),
    sa.Column('reason', S(), nullable=False), sa.Column('replica_id', S(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False), sa.PrimaryKeyConstraint('id'))
    op.create_index(op.f('ix_endpoint_event_endpoint_id'), 'endpoint_event', ['endpoint_id'], unique=False)
    op.create_table('controller_lease',
    sa.Column('name', S(), nullable=False), sa.Column('holder', S(), nullable=False),
    sa.Column('host', S(), nullable=False), sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False), sa.PrimaryKeyConstraint('name'))
    with op.batch_alter_table('endpoint') as batch:
        batch.add_column(sa.Column('slug', S(), nullable=True))
        batch.add_column(sa.Column('min_instances', sa.Integer(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('max_instances', sa.Integer(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('target_concurrency', sa.Integer(), nullable=False, server_default='1'))
        batch.add_column(sa.Column('timeout_seconds', sa.Float(), nullable=False, server_default='60'))
        batch.add_column(sa.Column('memory_mb', sa.Integer(), nullable=True))
        batch.create_unique_constraint('uq_endpoint_slug', ['slug'])
    with op.batch_alter_table('replica') as batch:
        batch.add_column(sa.Column('revision_id', S(), nullable=True))
        batch.add_column(sa.Column('cold_start', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('stop_at', sa.DateTime(), nullable=True))
        batch.create_index('ix_replica_revision_id', ['revision_id'])
    with op.batch_alter_table('inference_record') as batch:
        batch.add_column(sa.Column('revision_id', S(), nullable=True))

    # every existing endpoint becomes its own v1, with the replicas it has
    conn = op.get_bind()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    taken: set[str] = set()
    endpoint, replica, rev = sa.table('endpoint', sa.column('id'), sa.column('name'), sa.column('slug'),
                                      sa.column('min_instances'), sa.column('max_instances'),
                                      sa.column('target_concurrency')), \
        sa.table('replica', sa.column('endpoint_id'), sa.column('revision_id'), sa.column('state')), \
        sa.table('revision', sa.column('plan', sa.JSON), sa.column('config', sa.JSON), *(sa.column(c) for c in (
            'id', 'endpoint_id', 'number', 'model_id', 'workflow_id', 'engine', 'pool', 'status',
            'traffic', 'traffic_changed_at', 'replicas', 'scaled_at', 'failures', 'created_at', 'updated_at')))
    rows = conn.execute(sa.text("SELECT id, name, model_id, workflow_id, engine, pool, plan, config, status, kind "
                                "FROM endpoint")).mappings().all()
    for row in rows:
        slug = base = _slug(row['name'])
        n = 2
        while slug in taken:
            slug, n = f"{base}-{n}", n + 1
        taken.add(slug)
        plan = json.loads(row['plan']) if isinstance(row['plan'], str) else row['plan'] or {}
        count = int(plan.get('replicas') or 1)
        conn.execute(endpoint.update().where(endpoint.c.id == row['id']).values(
            slug=slug, min_instances=count, max_instances=count,
            target_concurrency=int(plan.get('per_replica_concurrency') or 1)))
        if row['kind'] != 'replicas':
            continue
        live = row['status'] in ('active', 'deploying', 'pending')
        rev_id = str(uuid.uuid4())
        conn.execute(rev.insert().values(
            id=rev_id, endpoint_id=row['id'], number=1, model_id=row['model_id'], workflow_id=row['workflow_id'],
            engine=row['engine'], pool=row['pool'], plan=plan, config={}, status='active' if live else 'inactive',
            traffic=100 if live else 0, traffic_changed_at=now, replicas=count if live else 0, scaled_at=now,
            failures=0, created_at=now, updated_at=now))
        conn.execute(replica.update().where(replica.c.endpoint_id == row['id']).values(revision_id=rev_id))


def downgrade() -> None:
    with op.batch_alter_table('inference_record') as batch:
        batch.drop_column('revision_id')
    with op.batch_alter_table('replica') as batch:
        batch.drop_index('ix_replica_revision_id')
        for column in ('stop_at', 'cold_start', 'revision_id'):
            batch.drop_column(column)
    with op.batch_alter_table('endpoint') as batch:
        batch.drop_constraint('uq_endpoint_slug', type_='unique')
        for column in ('memory_mb', 'timeout_seconds', 'target_concurrency', 'max_instances', 'min_instances', 'slug'):
            batch.drop_column(column)
    op.drop_table('controller_lease')
    op.drop_index(op.f('ix_endpoint_event_endpoint_id'), table_name='endpoint_event')
    op.drop_table('endpoint_event')
    op.drop_index(op.f('ix_revision_endpoint_id'), table_name='revision')
    op.drop_table('revision')
