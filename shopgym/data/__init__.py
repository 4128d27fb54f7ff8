"""The logged-data format: schema, validation, IO and the `LoggedData` container."""

from shopgym.data.logged import DataSummary, DropReport, LoggedData

__all__ = ["DataSummary", "DropReport", "LoggedData"]
