"""Calibration of the ONNX engine: which FFN channels are its outliers (``e5_graph``).

The calibration graph embeds the sentences below as queries and as passages, and each layer's
GELU output is reduced to the largest magnitude per channel. The text is fixed, varied and
multilingual, written for this purpose (no benchmark data), so every start finds the same
channels (~0.3 s).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .e5_model_file import Floats

SENTENCES = [
    "What did I tell you about my sister's new job?",
    "Where do I usually go hiking on weekends?",
    "hi",
    "ok thanks!",
    "Can you remind me what my dog's name is?",
    "I moved to Lisbon in March 2023 and I work as a nurse at the city hospital.",
    "My favourite food is spicy ramen, but I'm allergic to peanuts and shellfish.",
    "We adopted two cats last summer; they are called Miso and Tofu.",
    "The meeting with the design team was moved to Thursday at 3 pm.",
    "I'm training for a half marathon in October, running 40 km a week.",
    "Please write the answer in Python, using asyncio and type hints.",
    "Error: connection refused (ECONNREFUSED) at 127.0.0.1:5432 after 3 retries",
    "User prefers short answers, no emojis, metric units and 24-hour time.",
    "Melanie: I painted a sunset over the lake last week, it took me four evenings!",
    "Caroline: Thanks, the support group has really helped me since the move.",
    "When is my daughter's birthday party, and who did we invite?",
    "I bought a used Toyota Corolla for $8,500; the insurance is 92 euros a month.",
    "Book a table for 4 at 19:30, somewhere vegetarian near the station.",
    "Ich wohne seit zwei Jahren in Berlin und arbeite als Lehrerin.",
    "Wie heißt mein Hund? Ich habe es dir letzte Woche gesagt.",
    "J'aime beaucoup le jazz et je joue du piano depuis l'enfance.",
    "Mi hermano vive en Madrid y trabaja en una empresa de software.",
    "Eu prefiro café sem açúcar e acordo sempre às seis da manhã.",
    "Я изучаю японский язык уже три года.",
    "我每天早上七点去健身房，然后去上班。",
    "私は毎朝コーヒーを飲みながらニュースを読みます。",
    "나는 주말마다 친구들과 축구를 해요.",
    "أعمل مهندسًا في القاهرة منذ عام 2019.",
    "मुझे बारिश के मौसम में चाय पीना पसंद है।",
    "Remember: the wifi password for the cabin is on the fridge, not in the drawer.",
    "SELECT name, email FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "The quarterly report shows revenue up 12% and churn down to 3.4% — great news 🎉",
]


def ffn_input_maxima(
    run: Callable[[str, bool], list[Floats]], layers: int, width: int
) -> list[Floats]:
    """``run(text, is_query)`` returns each layer's GELU output for ``text``; the per-channel
    maxima of their magnitudes over ``SENTENCES``, embedded both ways."""
    maxima = [np.zeros(width, dtype=np.float32) for _ in range(layers)]
    for text in SENTENCES:
        for is_query in (True, False):
            for layer, output in enumerate(run(text, is_query)):
                channel_max = np.abs(output).reshape(-1, width).max(axis=0)
                np.maximum(maxima[layer], channel_max, out=maxima[layer])
    return maxima
