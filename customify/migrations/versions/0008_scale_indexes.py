"""indexes for a year of data: designs listed by status, the outbox by status

`GET /designs?status=` walked the owner's whole index to find a rare status; the sweeper's
and the prune's outbox queries read every mail row (bench/scale.py, bench/RESULTS.md).

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-30 04:30:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_designs_owner_status_created", "designs", ["owner_id", "status", "created_at", "id"])
    op.create_index("ix_mail_outbox_status_claimed", "mail_outbox", ["status", "claimed_at"])


def downgrade() -> None:
    op.drop_index("ix_mail_outbox_status_claimed", table_name="mail_outbox")
    op.drop_index("ix_designs_owner_status_created", table_name="designs")
