"""The site server's own errors (the protocol's are sync.errors):

NotEnrolled       `site run` or `status` before `site enroll` (exit 2)
EnrollmentError   `site enroll` failed; one sentence for the admin (exit 2)
"""

from __future__ import annotations


class NotEnrolled(Exception):
    """The site has no enrollment in its data_dir (exit 2)."""


class EnrollmentError(Exception):
    """Enrollment failed; the message is one sentence for the admin (exit code 2)."""
