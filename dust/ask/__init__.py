"""Questions in plain English, answered offline from the database under the asker's access policy.

``ask(session, "What was Jane Doe's temperature on day 2?")`` parses the question into a structured query with
the database's own vocabulary (dust.ask.vocabulary, dust.ask.parser), runs it through the engine's functions as
the session's principal (dust.ask.executor), and answers with a sentence, the data and the query.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from dust.ask.executor import execute
from dust.ask.parser import parse
from dust.ask.query import AskAnswer, AskRequest, Query
from dust.ask.vocabulary import Vocabulary
from dust.core.errors import InvalidInput

__all__ = ["AskAnswer", "AskRequest", "Query", "Vocabulary", "ask", "execute", "parse"]


def ask(session: Session, question: str | None = None, query: Query | None = None) -> AskAnswer:
    """The answer to ``question``, or to ``query`` (a structured query an answer gave) run again."""
    if (question is None) == (query is None):
        raise InvalidInput("send either a question or a query (one of them)")
    vocab = Vocabulary.of(session)
    if query is None:
        assert question is not None
        query = parse(question, vocab)
    return execute(session, query, vocab, question)
