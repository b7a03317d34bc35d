"""The tool-calling requests of the M checks: tools, questions and the tool-result conversation.

Data only, shared by the checks (:mod:`pytest_dsbench.conformance.tools`) and the fixture build
(``fixtures/tiny_r1_build/tool_tasks.py``), which trains the fixture model on exactly these prompts: the prompt an
engine renders for a check must be a prompt the model has learnt, token for token.
"""

from __future__ import annotations

from typing import Any

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL_QUESTION = "What's the weather in Paris? Use the tool."
TWO_CITY_QUESTION = "What's the weather in Paris and in Rome? Call the tool once for each city."
TOOL_CALL_ID = "call_dsbench_1"
TOOL_RESULT = "22°C and sunny"


def tool_result_messages(tool_content: Any = TOOL_RESULT) -> list[dict[str, Any]]:
    """user asks → assistant calls get_weather (content null) → the tool answers ``tool_content``."""
    return [
        {"role": "user", "content": TOOL_QUESTION},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": TOOL_CALL_ID,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": tool_content},
    ]
