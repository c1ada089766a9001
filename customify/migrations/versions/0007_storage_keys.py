"""storage keys, not paths: designs.preview_key / thumbnail_key

The columns held absolute file paths in the data dir (…/renders/<design id>/v1-ab12cd34.png). They now
hold storage keys (renders/<design id>/v1-ab12cd34.png), the same in the data dir and in a bucket, so a
render made on one machine is found from any other.

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-30 04:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _key(path: str | None) -> str | None:
    """…/renders/<id>/<file> → renders/<id>/<file> (a key already is one)."""
    if not path:
        return path
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-3:]) if len(parts) >= 3 and parts[-3] == "renders" else path


def upgrade() -> None:
    with op.batch_alter_table("designs", schema=None) as batch_op:
        batch_op.alter_column("preview_path", new_column_name="preview_key")
        batch_op.alter_column("thumbnail_path", new_column_name="thumbnail_key")
    designs = sa.table(
        "designs",
        sa.column("id", sa.String),
        sa.column("preview_key", sa.String),
        sa.column("thumbnail_key", sa.String),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(designs.c.id, designs.c.preview_key, designs.c.thumbnail_key).where(
            designs.c.preview_key.is_not(None)
        )
    ).all()
    for design_id, preview, thumbnail in rows:
        if (_key(preview), _key(thumbnail)) != (preview, thumbnail):
            conn.execute(
                designs.update()
                .where(designs.c.id == design_id)
                .values(preview_key=_key(preview), thumbnail_key=_key(thumbnail))
            )


def downgrade() -> None:
    # Keys stay keys (relative to the data dir); only the names go back.
    with op.batch_alter_table("designs", schema=None) as batch_op:
        batch_op.alter_column("preview_key", new_column_name="preview_path")
        batch_op.alter_column("thumbnail_key", new_column_name="thumbnail_path")
