"""Regenerate support.jsonl: ~200 support chats in one consistent persona, with planted PII and duplicates.

The quickstart fine-tunes a real instruct model (SmolLM2-135M-Instruct) on this file, so the effect
of training must be visible in its answers. Every answer is written by the same persona for an
invented company, in one style, with facts a base model cannot know:

- company "Aurelo Home", support desk "Aurelo Care", products named "Aurelo <Name>" (PRODUCTS);
- every answer ends with the same sign-off line (SIGN_OFF);
- a refund policy with a specific window (REFUND_DAYS) and a named warranty (WARRANTY).

The evaluation prompts in ../training.yaml ask held-out questions whose expected answers are exactly
these facts; the base model fails them, the fine-tuned one passes.

The file must also exercise the dataset pipeline's cleaning, so it deliberately contains exact
duplicates, near duplicates (one word put in front; case/whitespace variants count as exact duplicates
after normalisation) and PII of several kinds in user turns (email, phone, card number, IBAN, SSN,
IPv4, API key). Every value is synthetic or a published test value. The ratios keep
../dataset.yaml's gates passing (measured: 200 read, 18 exact + 12 near duplicates = 0.15 ≤ 0.4,
15 records with PII = 0.08 ≤ 0.25, 170 kept ≥ 100).

Answers are short (about 40 tokens) so a whole chat, with SmolLM2's default system prompt, fits the
quickstart's maxSeqLength of 128 tokens without cutting off the sign-off.

Deterministic: `python generate.py` rewrites the same file byte for byte.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

COMPANY = "Aurelo Home"
DESK = "Aurelo Care"
SIGN_OFF = "Warm regards, Ada at Aurelo Care"
REFUND_DAYS = 45
WARRANTY = "Aurelo Shield"

PRODUCTS = [
    "Aurelo Hub",
    "Aurelo Cam",
    "Aurelo Plug",
    "Aurelo Thermo",
    "Aurelo Bell",
    "Aurelo Glow",
    "Aurelo Sense",
    "Aurelo Beam",
]

# (user issue, the fix; {p} is the product) — the technical content of the troubleshooting chats
ISSUES = [
    (
        "won't connect to wifi",
        "Hold the reset button on your {p} for 10 seconds, then add it again in the Aurelo app.",
    ),
    (
        "keeps going offline",
        "Move your {p} closer to the router and install the latest firmware from the Aurelo app.",
    ),
    ("shows a red light", "A red light on the {p} means it lost power; check the cable, then restart it."),
    ("is not updating", "Open the Aurelo app, tap your {p}, then Settings > Firmware > Check for updates."),
    (
        "lost its schedule",
        "Sign in to the Aurelo app again; the {p} restores its schedule from your account.",
    ),
    (
        "is very slow",
        "Restart your {p} and turn off unused routines in the Aurelo app; that fixes most slowdowns.",
    ),
    ("won't pair with my phone", "Allow Bluetooth and location for the Aurelo app, then pair the {p} again."),
    (
        "makes a clicking noise",
        "A soft click when the {p} switches is normal; constant clicking needs a replacement.",
    ),
    ("flickers", "Update the {p} firmware in the Aurelo app; if it still flickers, we will replace it."),
    (
        "stopped responding",
        "Unplug your {p} for 30 seconds and plug it back in; it rejoins the Aurelo app by itself.",
    ),
]

OPENERS = [
    "Hi, my {p} {i}.",
    "Hello! The {p} {i}. What can I do?",
    "My new {p} {i}, please help.",
    "Why does my {p} say it {i}?",
    "Help, the {p} {i}.",
]

REFUND_QUESTIONS = [
    "Can I return my {p}?",
    "I want a refund for the {p}.",
    "How long do I have to send back a {p}?",
    "Is it too late to return the {p} I bought last month?",
    "What is your return policy for the {p}?",
]
REFUND_ANSWER = (
    "Yes. Your {p} has a {d}-day refund window from delivery. Start the return in the Aurelo app "
    "under Orders > Return and we email you a free label."
)

WARRANTY_QUESTIONS = [
    "Is my {p} under warranty?",
    "My {p} broke after a year. Is that covered?",
    "What warranty comes with the {p}?",
]
WARRANTY_ANSWER = (
    "Your {p} is covered by the 2-year {w} warranty. Tell us the serial number from the Aurelo app "
    "and we ship a replacement for free."
)

GENERAL = [
    (
        "Do you ship outside the US?",
        "Aurelo Home ships to the US, Canada and the EU, free on orders over $50.",
    ),
    (
        "How do I reset my password?",
        "Tap Forgot password on the Aurelo app sign-in screen; the link is valid for 1 hour.",
    ),
    (
        "Can I talk to a human?",
        "You are talking to Aurelo Care. I can also book a call back from the Aurelo app.",
    ),
    ("Where is my order?", "Open Orders in the Aurelo app; the tracking link appears as soon as it ships."),
    (
        "Do Aurelo devices work with Alexa?",
        "Yes. Enable the Aurelo skill in the Alexa app and sign in with your Aurelo account.",
    ),
    (
        "How do I delete my account?",
        "Go to Profile > Privacy > Delete account in the Aurelo app; it takes 7 days.",
    ),
    (
        "Can I move a device to another home?",
        "Yes. In the Aurelo app, open the device, tap Move, then pick the other home.",
    ),
    (
        "Do you have a student discount?",
        "Yes. Verify your student email in the Aurelo app to get 10% off every order.",
    ),
    ("Is there a monthly fee?", "No. The Aurelo app and every device work without a subscription."),
    (
        "How do I share access with my family?",
        "In the Aurelo app, open Home > Members and invite them by email.",
    ),
]

# user turns carrying PII ({p} product, {i} issue) — synthetic or documented test values only
PII = [
    "You can reach me at jane.doe@example.com. Hi, my {p} {i}.",
    "Call me back on +1 415 555 0132, my {p} {i}.",
    "I paid with card 4111 1111 1111 1111 and the {p} {i}.",
    "Refund to IBAN DE89 3704 0044 0532 0130 00 please, the {p} {i}.",
    "My SSN is 078-05-1120 for verification. The {p} {i}.",
    "The {p} at 192.168.10.45 {i}.",
    "I used the API key sk-test-51HxQ2eZvKYlo2C9aBcDeFgHiJkLmNoP and the {p} {i}.",
    "Email me at sam.lee@example.org when you can, the {p} {i}.",
    "My number is (212) 555-0187. Hello, the {p} {i}.",
]


def chat(user: str, answer: str) -> dict[str, object]:
    """One record in the chat schema the data worker reads (spec.schema.messagesField: messages)."""
    return {
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": f"{answer}\n{SIGN_OFF}"},
        ]
    }


def unique_records(rng: random.Random) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    # troubleshooting: every product × issue, a second phrasing for every other one; every 9th has PII
    n = 0
    for p in PRODUCTS:
        for k, (issue, fix) in enumerate(ISSUES):
            phrasings = 2 if k % 2 == 0 else 1
            for j in range(phrasings):
                if n % 9 == 4:
                    template = PII[(n // 9) % len(PII)]
                else:
                    template = OPENERS[(n + 2 * j + len(p)) % len(OPENERS)]
                out.append(chat(template.format(p=p, i=issue), fix.format(p=p)))
                n += 1
    # policy: refunds (three phrasings per product) and warranty (two per product)
    for k, p in enumerate(PRODUCTS):
        for j in range(3):
            q = REFUND_QUESTIONS[(k + j) % len(REFUND_QUESTIONS)]
            out.append(chat(q.format(p=p), REFUND_ANSWER.format(p=p, d=REFUND_DAYS)))
        for j in range(2):
            q = WARRANTY_QUESTIONS[(k + j) % len(WARRANTY_QUESTIONS)]
            out.append(chat(q.format(p=p), WARRANTY_ANSWER.format(p=p, w=WARRANTY)))
    out += [chat(q, a) for q, a in GENERAL]
    rng.shuffle(out)
    return out


def records(seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out = unique_records(rng)
    base = len(out)
    for n in range(18):  # exact duplicates, some with changed case and spacing (same key after normalising)
        rec = json.loads(json.dumps(out[(n * 7) % base]))
        if n % 2:
            rec["messages"][0]["content"] = "  " + str(rec["messages"][0]["content"]).upper() + "  "
        out.append(rec)
    for n in range(12):  # near duplicates: one word put in front (5-word shingles: Jaccard ≈ 0.97)
        rec = json.loads(json.dumps(out[(n * 11 + 3) % base]))
        rec["messages"][0]["content"] = "Hey, " + str(rec["messages"][0]["content"])
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
