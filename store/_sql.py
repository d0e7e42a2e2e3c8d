"""Small SQL constructs that read the same on SQLite and PostgreSQL."""

from collections.abc import Collection, Iterator, Mapping
from typing import Any, cast

from sqlalchemy import Boolean, Integer, Table, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlmodel import Session

from store.tables import StoreModel

CHUNK = 500  # ids per IN list: well under SQLite's and PostgreSQL's parameter limits


class days_between(FunctionElement[int]):
    """Whole days from the second date to the first (`later - earlier`), on any backend."""

    type = Integer()
    name = "days_between"
    inherit_cache = True


@compiles(days_between)
def _days_between_default(element: days_between, compiler: SQLCompiler, **kw: Any) -> str:
    # PostgreSQL: date - date is already an integer number of days.
    later, earlier = list(element.clauses)
    return f"({compiler.process(later, **kw)} - {compiler.process(earlier, **kw)})"


@compiles(days_between, "sqlite")
def _days_between_sqlite(element: days_between, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite stores dates as ISO text; julianday() turns them into day numbers.
    later, earlier = list(element.clauses)
    return (
        f"CAST(julianday({compiler.process(later, **kw)}) - "
        f"julianday({compiler.process(earlier, **kw)}) AS INTEGER)"
    )


def chunks(ids: Collection[str], size: int = CHUNK) -> Iterator[list[str]]:
    """Unique ids in sorted, bounded lists, so every IN clause stays a fixed size."""
    unique = sorted(set(ids))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


def insert_if_absent(
    session: Session, model: type[StoreModel], values: Mapping[str, Any], key: str
) -> None:
    """INSERT ... ON CONFLICT (key) DO NOTHING: a write that never fails on an existing row."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.exec(pg_insert(model).values(dict(values)).on_conflict_do_nothing(
            index_elements=[key]))
    elif dialect == "sqlite":
        session.exec(sqlite_insert(model).values(dict(values)).on_conflict_do_nothing(
            index_elements=[key]))
    else:
        raise NotImplementedError(f"the store supports SQLite and PostgreSQL, not {dialect}")


def upsert(
    session: Session, model: type[StoreModel], values: Mapping[str, Any], key: str
) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE: set a row whether or not it exists."""
    dialect = session.get_bind().dialect.name
    updates = {k: v for k, v in values.items() if k != key}
    if dialect == "postgresql":
        pg = pg_insert(model).values(dict(values))
        session.exec(pg.on_conflict_do_update(index_elements=[key], set_=updates))
    elif dialect == "sqlite":
        lite = sqlite_insert(model).values(dict(values))
        session.exec(lite.on_conflict_do_update(index_elements=[key], set_=updates))
    else:
        raise NotImplementedError(f"the store supports SQLite and PostgreSQL, not {dialect}")


def table_of(model: type[StoreModel]) -> Table:
    """The Core table of a model, for statements that read plain rows (no ORM objects)."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


class in_ids(ColumnElement[bool]):
    """`column IN (the list bound to :name)`, for statements built once and run often.

    PostgreSQL gets `column = ANY(:name)` with the list as one array parameter: the same
    SQL text whatever the list's length, so the server prepares it once and the client
    renders nothing per id. SQLite gets an expanding `IN (...)`.
    """

    type = Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True  # a comparison: no `= 1` added on SQLite
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy's cache-key protocol)
        ("column", InternalTraversal.dp_clauseelement), ("name", InternalTraversal.dp_string)]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name


@compiles(in_ids)
def _in_ids_default(element: in_ids, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw)


@compiles(in_ids, "postgresql")
def _in_ids_postgresql(element: in_ids, compiler: SQLCompiler, **kw: Any) -> str:
    array = bindparam(element.name, type_=ARRAY(element.column.type))
    return compiler.process(element.column == any_(array), **kw)
