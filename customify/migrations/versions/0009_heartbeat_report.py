"""worker_heartbeats.picture is named report, the word the code uses for a worker's heartbeat payload

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 07:00:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("worker_heartbeats") as batch:
        batch.alter_column("picture", new_column_name="report")


def downgrade() -> None:
    with op.batch_alter_table("worker_heartbeats") as batch:
        batch.alter_column("report", new_column_name="picture")
