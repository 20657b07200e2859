"""Scaling activities as EC2 Auto Scaling reports them, kept newest-first per group, and their XML form."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sandbox.aws.query_protocol import elements

# The most activities kept per group; older ones are dropped (AWS itself keeps six weeks).
MAX_ACTIVITIES_PER_GROUP = 1000


def aws_time(moment: datetime) -> str:
    """ISO 8601 with milliseconds and Z, as AWS's XML timestamps look."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class Activity:
    group_name: str
    group_arn: str
    description: str
    cause: str
    start_time: datetime
    status_code: str
    progress: int
    status_message: str | None = None
    end_time: datetime | None = None
    details: dict[str, str] = field(default_factory=dict)
    activity_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def finish(self, status_code: str, at: datetime, status_message: str | None = None) -> None:
        self.status_code = status_code
        self.end_time = at
        self.progress = 100
        if status_message is not None:
            self.status_message = status_message

    def to_xml(self) -> str:
        return elements(
            {
                "ActivityId": self.activity_id,
                "AutoScalingGroupName": self.group_name,
                "Description": self.description,
                "Cause": self.cause,
                "StartTime": aws_time(self.start_time),
                "EndTime": aws_time(self.end_time) if self.end_time else None,
                "StatusCode": self.status_code,
                "StatusMessage": self.status_message,
                "Progress": self.progress,
                "Details": json.dumps(self.details, separators=(",", ":")) if self.details else None,
                "AutoScalingGroupARN": self.group_arn,
            }
        )

    def to_json(self) -> dict[str, object]:
        return {
            "activity_id": self.activity_id,
            "group": self.group_name,
            "description": self.description,
            "cause": self.cause,
            "start_time": aws_time(self.start_time),
            "end_time": aws_time(self.end_time) if self.end_time else None,
            "status_code": self.status_code,
            "status_message": self.status_message,
            "progress": self.progress,
        }


class ActivityLog:
    """All groups' activities; each group's list is newest-first, like DescribeScalingActivities."""

    def __init__(self) -> None:
        self._by_group: dict[str, list[Activity]] = {}

    def add(self, activity: Activity) -> Activity:
        activities = self._by_group.setdefault(activity.group_name, [])
        activities.insert(0, activity)
        del activities[MAX_ACTIVITIES_PER_GROUP:]
        return activity

    def for_group(self, group_name: str) -> list[Activity]:
        return list(self._by_group.get(group_name, []))

    def all(self, group_names: set[str] | None = None) -> list[Activity]:
        """Activities of the named groups (all when None), newest first across groups."""
        chosen = [
            activity
            for name, activities in self._by_group.items()
            if group_names is None or name in group_names
            for activity in activities
        ]
        return sorted(chosen, key=lambda a: a.start_time, reverse=True)

    def in_progress(self, group_name: str) -> list[Activity]:
        return [a for a in self._by_group.get(group_name, []) if a.end_time is None]

    def clear(self) -> None:
        self._by_group.clear()
