"""live_toggles: each finished live toggle, its estimate and its exact shift side by side

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 12:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'live_toggles',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('checkpoint', sa.String(length=64), nullable=False),
        sa.Column('base_model', sa.String(length=256), nullable=False),
        sa.Column('regime', sa.String(length=16), nullable=True),
        sa.Column('what', sa.Text(), nullable=False),
        sa.Column('set_key', sa.String(length=64), nullable=False),
        sa.Column('n_neurons', sa.Integer(), nullable=False),
        sa.Column('layers', sa.JSON(), nullable=False),
        sa.Column('mode', sa.String(length=16), nullable=False),
        sa.Column('factor', sa.Float(), nullable=False),
        sa.Column('probe_limit', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('estimate', sa.JSON(), nullable=False),
        sa.Column('exact', sa.JSON(), nullable=True),
        sa.Column('control_exact', sa.JSON(), nullable=True),
        sa.Column('timings', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=64), server_default='local', nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('live_toggles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_live_toggles_checkpoint'), ['checkpoint'], unique=False)
        batch_op.create_index(batch_op.f('ix_live_toggles_set_key'), ['set_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_live_toggles_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_live_toggles_created_by'), ['created_by'], unique=False)
        batch_op.create_index(batch_op.f('ix_live_toggles_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('live_toggles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_live_toggles_created_at'))
        batch_op.drop_index(batch_op.f('ix_live_toggles_created_by'))
        batch_op.drop_index(batch_op.f('ix_live_toggles_state'))
        batch_op.drop_index(batch_op.f('ix_live_toggles_set_key'))
        batch_op.drop_index(batch_op.f('ix_live_toggles_checkpoint'))
    op.drop_table('live_toggles')
