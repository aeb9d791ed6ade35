"""/ask: a question in plain English, answered from the database under the asker's access policy."""

from __future__ import annotations

from typing import Any

from dust.api.deps import Router, SessionDep, allow
from dust.ask import AskAnswer, AskRequest, ask
from dust.core.security import Permission

router = Router(tags=["ask"])
ASK_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No entity of that name, or none the asker may see."},
    422: {"description": "A question not understood (the detail says what was, and suggests a phrasing), too long, "
          "or holding control characters."},
}  # fmt: skip


@router.post("/ask", response_model=AskAnswer, responses=ASK_ERRORS, **allow(Permission.read))
def ask_(data: AskRequest, session: SessionDep) -> AskAnswer:
    """Answer ``question`` (or run ``query`` again): ``{question, query, answer, result, candidates?}``."""
    return ask(session, data.question, data.query)
