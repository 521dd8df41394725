"""Every time form the docs name, and how each scheduler must write it (shared by the dialects' tests).

docs/quickstart.md: ``HH:MM:SS``, ``D-HH:MM:SS``, ``MM:SS`` or a number of minutes; clustrix also
reads ``D-HH`` and ``D-HH:MM`` (as sbatch does) and a string of minutes. SLURM reads a day prefix;
OpenPBS, Torque and Grid Engine read hours beyond 24 (their parsers take digits, ``:`` and ``.`` only).
"""

from __future__ import annotations

from typing import NamedTuple


class TimeForm(NamedTuple):
    given: str | int | float
    seconds: int
    slurm: str  # --time=
    pbs: str  # -l walltime=
    sge: str  # -l h_rt=


TIME_FORMS = [
    TimeForm("2-00:00:00", 172800, "2-00:00:00", "48:00:00", "48:00:00"),
    TimeForm("1-12:00:00", 129600, "1-12:00:00", "36:00:00", "36:00:00"),
    TimeForm("2-00", 172800, "2-00:00:00", "48:00:00", "48:00:00"),
    TimeForm("1-02:30", 95400, "1-02:30:00", "26:30:00", "26:30:00"),
    TimeForm("04:00:00", 14400, "04:00:00", "04:00:00", "4:00:00"),
    TimeForm("100:00:00", 360000, "4-04:00:00", "100:00:00", "100:00:00"),
    TimeForm("05:30", 330, "00:05:30", "00:05:30", "0:05:30"),
    TimeForm(90, 5400, "01:30:00", "01:30:00", "1:30:00"),
    TimeForm("90", 5400, "01:30:00", "01:30:00", "1:30:00"),
    TimeForm(1.5, 90, "00:01:30", "00:01:30", "0:01:30"),
    TimeForm(2880, 172800, "2-00:00:00", "48:00:00", "48:00:00"),
]

#: A PBS walltime as OpenPBS and Torque parse it: ``[[HH:]MM:]SS[.ms]``, digits, ``:`` and ``.`` only.
PBS_WALLTIME = r"\d+:\d{2}:\d{2}"
