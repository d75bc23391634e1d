"""The course's chat widget: one line at the end of every chapter.

>>> from phi3_helpers.widgets import chat_widget
>>> chat_widget(llm)          # llm = phi3_helpers.load(...), or a ChatSession
"""

from __future__ import annotations

from .chat import ChatWidget, chat_widget

__all__ = ["ChatWidget", "chat_widget"]
