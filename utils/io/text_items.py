"""The text of one item: plain text, a conversation (ShareGPT, OpenAI chat, MT-Bench) or an
Alpaca record (docs/method.md section 1).

A record becomes one string by the first of these rules that applies:

1. A string is the text itself.
2. A conversation is its turns' texts joined with "\\n": a non-empty list of turns (objects),
   a turn's text being its "value" (ShareGPT: {"from": ..., "value": ...}), or its "content"
   when it has no "value" (OpenAI chat: {"role": ..., "content": ...}); or a non-empty list of
   strings, the user turns (MT-Bench's "turns").
3. An object with a "conversations" list (ShareGPT), a "messages" list (OpenAI chat) or a
   "turns" list of strings (MT-Bench) is that conversation, by rule 2; its other fields (an
   "id", a "system" prompt, a "category") are not embedded.
4. An object with "instruction" and "output" (Alpaca) is its "instruction", "input" and
   "output", in that order, joined with "\\n"; empty or missing ones are left out, other fields
   are not embedded.
5. An object with exactly one field is that field's value, by these same rules
   ({"text": "..."}, a Parquet row of one column).
6. Anything else is refused, naming the record: an object with several fields that matches
   none of the above (choose the field to embed with --text_field), a number, true/false,
   null, an empty list or object.

With --text_field NAME, every record must be an object holding the field NAME, and the text is
that field's value by the same rules (so NAME may hold a string or a conversation).
"""

import json

from ..errors import InputError

CONVERSATION_KEYS = ("conversations", "messages", "turns")  # ShareGPT, OpenAI chat, MT-Bench


ALPACA_KEYS = ("instruction", "input", "output")


def preview(value, limit=60):
    """``value`` as JSON for an error message: whole, cut after a word, or described.

    A message is never cut inside a word: a long value is cut at its last space before
    ``limit`` characters (``...`` marks the cut), or, with no space to cut at, described by its
    type and size.
    """
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    if cut > 0:
        return text[:cut].rstrip(",:") + " ..."
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, (list, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def field_names(record):
    """The fields of a record for a message: ``'a', 'b'``."""
    return ", ".join(f"'{key}'" for key in record) or "none"


def field_value(record, where, text_field):
    """The value of ``text_field`` in ``record``; an InputError naming ``where`` if it has none."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: is {preview(record)}, not a record with fields, so "
                         f"--text_field {text_field} cannot apply")
    if text_field not in record:
        raise InputError(f"{where}: has no field '{text_field}' (--text_field); its fields "
                         f"are {field_names(record)}")
    return record[text_field]


def is_conversation(value):
    """A non-empty list of turns: all objects, or all strings (rule 2)."""
    return isinstance(value, list) and bool(value) and (
        all(isinstance(t, dict) for t in value) or all(isinstance(t, str) for t in value))


def conversation_text(turns, where):
    """Each turn's text ("value", else "content", or the turn itself when it is a string)
    joined with newlines (rule 2)."""
    if isinstance(turns[0], str):
        return "\n".join(turns)
    texts = []
    for j, turn in enumerate(turns):
        key = "value" if "value" in turn else "content"
        if not isinstance(turn.get(key), str):
            raise InputError(f"{where}: turn {j} has no text ('value' or 'content' string)")
        texts.append(turn[key])
    return "\n".join(texts)


def alpaca_text(record, where):
    """Instruction, input and output joined with newlines, empty ones left out (rule 4)."""
    texts = []
    for key in ALPACA_KEYS:
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{where}: field '{key}' is {preview(value)}, not text")
        if value:
            texts.append(value)
    return "\n".join(texts)


def record_text(record, where):
    """The text of an object by rules 3 to 6."""
    for key in CONVERSATION_KEYS:
        if is_conversation(record.get(key)):
            return conversation_text(record[key], where)
    if "instruction" in record and "output" in record:
        return alpaca_text(record, where)
    if len(record) == 1:
        return item_text(next(iter(record.values())), where)
    raise InputError(f"{where}: a record with fields {field_names(record)} matches no known "
                     f"format (ShareGPT, OpenAI chat, Alpaca); choose the field to embed with "
                     f"--text_field")


def item_text(item, where, text_field=None):
    """The text to embed for one record, by the rules of this module's docstring.

    Parameters
    ----------
    item : str, list or dict
        One record of a text shard, as read from JSON, JSON Lines or a Parquet row.
    where : str
        How errors name the record, for example ``"data/0.json: item 3"``.
    text_field : str, optional
        The field holding the text (``--text_field``); every record must have it.
    """
    if text_field is not None:
        item = field_value(item, where, text_field)
    if isinstance(item, str):
        return item
    if is_conversation(item):
        return conversation_text(item, where)
    if isinstance(item, dict) and item:
        return record_text(item, where)
    raise InputError(f"{where}: is neither text nor a conversation (found {preview(item)})")
