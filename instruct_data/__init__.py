"""RaDialog's instruct data: report generation, correction, CheXpert QA and teacher-written tasks."""

from radialog.instruct_data.builder import (
    TASKS,
    InstructConfig,
    InstructResult,
    build_instruct_data,
    read_predictions,
    write_instruct_data,
)
from radialog.instruct_data.teacher import Teacher, TeacherConfig

__all__ = [
    "TASKS",
    "InstructConfig",
    "InstructResult",
    "Teacher",
    "TeacherConfig",
    "build_instruct_data",
    "read_predictions",
    "write_instruct_data",
]
