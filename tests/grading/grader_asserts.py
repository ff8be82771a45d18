"""Assertions shared by the grader tests of the lesson exercises."""
from coursekit.grading import grade


def _full_marks(exercise_id, fn):
    """A correct implementation gets every point."""
    result = grade(exercise_id, fn)
    assert result.passed and result.score == result.max_score, result.feedback


def _caught(exercise_id, fn, words):
    """A mistaken implementation loses points, and the feedback names the mistake (``words``)."""
    result = grade(exercise_id, fn)
    assert result.score < result.max_score
    assert any(words in line for line in result.feedback), result.feedback
