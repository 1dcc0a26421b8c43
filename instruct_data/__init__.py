"""RaDialog's instruct data: report generation, correction, CheXpert QA and teacher-written tasks."""

from instruct_data.builder import (
    TASKS,
    InstructConfig,
    InstructResult,
    build_instruct_data,
    read_predictions,
    write_instruct_data,
)
from instruct_data.teacher import Teacher, TeacherConfig

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
