"""Regenerate support.jsonl: ~200 synthetic support chats with planted PII and duplicates.

The quickstart dataset must exercise the cleaning steps, so it deliberately contains
exact duplicates, near duplicates (case/whitespace changes) and PII of several kinds
(email, phone, card number, IBAN, SSN, IPv4, API key). Every value is synthetic or a
published test value. Deterministic: `python generate.py` rewrites the same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PRODUCTS = ["router", "thermostat", "smart plug", "camera", "doorbell", "speaker", "light strip", "hub"]
ISSUES = [
    ("won't connect to wifi", "Hold the reset button for 10 seconds, then pair it again from the app."),
    (
        "keeps going offline",
        "Move it closer to the access point and update the firmware under Settings > Device.",
    ),
    ("shows a red light", "A red light means no power to the sensor; check the cable and restart it."),
    ("is not updating", "Open the app, go to Settings > Firmware and tap Check for updates."),
    ("lost its schedule", "Schedules are restored from the cloud after you sign in again in the app."),
    ("is very slow", "Restart it and disable any unused integrations; most slowdowns disappear."),
    ("won't pair with my phone", "Enable Bluetooth and location permission for the app, then retry pairing."),
    (
        "makes a clicking noise",
        "A clicking relay is normal when switching; constant clicking needs a replacement.",
    ),
]
OPENERS = [
    "Hi, my {p} {i}.",
    "Hello! The {p} {i}. What can I do?",
    "My new {p} {i}, please help.",
    "Why {p} {i}?",
]
# (template for the user turn, entity kind) — synthetic or documented test values only
PII = [
    ("You can reach me at jane.doe@example.com if needed. My {p} {i}.", "EMAIL"),
    ("Call me back on +1 415 555 0132, my {p} {i}.", "PHONE"),
    ("I paid with card 4111 1111 1111 1111 and the {p} {i}.", "CREDIT_CARD"),
    ("Refund to IBAN DE89 3704 0044 0532 0130 00 please, the {p} {i}.", "IBAN"),
    ("My SSN is 078-05-1120 for verification. The {p} {i}.", "US_SSN"),
    ("The {p} at 192.168.10.45 {i}.", "IPV4"),
    ("I used the API key sk-test-51HxQ2eZvKYlo2C9aBcDeFgHiJkLmNoP and the {p} {i}.", "API_KEY"),
]


def chat(user: str, assistant: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def records(seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for n in range(170):
        product, (issue, answer) = rng.choice(PRODUCTS), rng.choice(ISSUES)
        if n % 12 == 5:
            template, _ = PII[(n // 12) % len(PII)]
        else:
            template = rng.choice(OPENERS)
        out.append(chat(template.format(p=product, i=issue), answer))
    for n in range(20):  # exact duplicates
        out.append(json.loads(json.dumps(out[n * 7])))
    for n in range(10):  # near duplicates: same text, different case and spacing
        rec = json.loads(json.dumps(out[n * 11 + 3]))
        rec["messages"][0]["content"] = "  " + str(rec["messages"][0]["content"]).upper() + "  "
        out.append(rec)
    rng.shuffle(out)
    return out


def main() -> None:
    path = Path(__file__).with_name("support.jsonl")
    with path.open("w") as f:
        for rec in records():
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
