"""The course's chat widget, at the end of every chapter: ``chat_widget(llm)`` (a loaded model or a session)."""

from .chat import ChatWidget, chat_widget

__all__ = ["ChatWidget", "chat_widget"]
