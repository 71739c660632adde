"""Alembic environment: one chain per module (branch labels), applied together with `upgrade heads`."""

from alembic import context

from citybrain.modules import import_models

config = context.config
db = config.attributes["db"]
target_metadata = import_models()


def include_object(obj, name, type_, reflected, compare_to):  # noqa: ANN001
    """While generating one module's revision, look only at that module's tables (`<module>_*`)."""
    prefix = config.attributes.get("table_prefix")
    if prefix and type_ == "table":
        return name.startswith(prefix)
    if prefix and hasattr(obj, "table"):
        return obj.table.name.startswith(prefix)
    return True


def run() -> None:
    with db.write_engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=db.is_sqlite,
            compare_type=True,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()


run()
