"""Copy the code tables of ``core/progress_core/codes.py`` into the files that show them.

Rewrites the generated region of ``client-js/src/codes.ts`` (the TypeScript mirror) and of
``docs/protocol.md`` (the close-code and error-code tables), between their ``generated`` markers.
With ``--check`` it writes nothing and exits 1 when a file differs from what it would write;
``tests/test_codes_mirror.py`` runs that check.

    python scripts/gen_codes.py           # regenerate
    python scripts/gen_codes.py --check   # fail on drift
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from progress_core.codes import CLOSE_RULES, ERROR_RULES, Reaction

ROOT = Path(__file__).resolve().parents[1]
CODES_TS = ROOT / "client-js" / "src" / "codes.ts"
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
SOURCE = "core/progress_core/codes.py"
REACTION_TEXT = {
    Reaction.STOP: "none: do not reconnect",
    Reaction.RECONNECT_NOW: "reconnect at once, with jitter",
    Reaction.REFRESH_TOKEN: (
        "fetch a fresh token, then reconnect; a client with a fixed token stops"
    ),
    Reaction.BACK_OFF: "reconnect with backoff",
    Reaction.BACK_OFF_LONGER: "back off longer",
}


def typescript() -> str:
    close = "\n".join(
        f"  {code.name}: {code.value}, // {rule.meaning}" for code, rule in CLOSE_RULES.items()
    )
    reactions = " | ".join(f'"{reaction}"' for reaction in Reaction)
    close_reactions = "\n".join(
        f'  [CloseCode.{code.name}]: "{rule.reaction}",' for code, rule in CLOSE_RULES.items()
    )
    errors = "\n".join(
        f'  {code.name}: "{code.value}", // {rule.meaning}' for code, rule in ERROR_RULES.items()
    )
    error_rules = "\n".join(
        f"  {code.value}: {{ status: {'null' if rule.status is None else rule.status}, "
        f"retryable: {str(rule.retryable).lower()} }},"
        for code, rule in ERROR_RULES.items()
    )
    return f"""\
/** WebSocket close codes the gateway sends. */
export const CloseCode = {{
{close}
}} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** How the client reacts to a close code; see `reactionTo`. */
export type Reaction = {reactions};

/** The reaction to each close code the gateway sends. */
export const CLOSE_REACTIONS: Readonly<Record<CloseCode, Reaction>> = {{
{close_reactions}
}};

/** `code` of an `{{"op": "error"}}` frame and of problem+json bodies. */
export const ErrorCode = {{
{errors}
}} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * An error code's HTTP status (`null`: the status of the HTTP error it stands for), and whether
 * retrying the same request later can succeed.
 */
export interface ErrorRule {{
  readonly status: number | null;
  readonly retryable: boolean;
}}

export const ERROR_RULES: Readonly<Record<ErrorCode, ErrorRule>> = {{
{error_rules}
}};
"""


def close_table() -> str:
    rows = [
        f"| {code.value} | {rule.meaning} | {REACTION_TEXT[rule.reaction]} |"
        for code, rule in CLOSE_RULES.items()
    ]
    return "\n".join(["| code | meaning | client reaction |", "|---|---|---|", *rows]) + "\n"


def error_table() -> str:
    rows = [
        f"| `{code.value}` | {'—' if rule.status is None else rule.status} | {rule.meaning} "
        f"| {'yes' if rule.retryable else 'no'} |"
        for code, rule in ERROR_RULES.items()
    ]
    header = ["| code | status | when | retry later |", "|---|---|---|---|"]
    return "\n".join([*header, *rows]) + "\n"


def replace_region(text: str, name: str, body: str, comment: tuple[str, str], path: Path) -> str:
    """Replace what lies between the ``begin``/``end`` markers named ``name``."""
    start, end = comment
    begin = f"{start} generated:{name} by scripts/gen_codes.py from {SOURCE}; do not edit{end}\n"
    finish = f"{start} end generated:{name}{end}\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(finish), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise LookupError(f"{path}: expected one region between\n  {begin}  {finish}")
    return pattern.sub(lambda _: begin + body + finish, text)


def rendered() -> dict[Path, str]:
    """Each file as it should be."""
    ts = replace_region(CODES_TS.read_text("utf-8"), "codes", typescript(), ("//", ""), CODES_TS)
    md = PROTOCOL_MD.read_text("utf-8")
    md = replace_region(md, "close-codes", close_table(), ("<!--", " -->"), PROTOCOL_MD)
    md = replace_region(md, "error-codes", error_table(), ("<!--", " -->"), PROTOCOL_MD)
    return {CODES_TS: ts, PROTOCOL_MD: md}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 on drift")
    check = parser.parse_args().check
    stale = [path for path, text in rendered().items() if path.read_text("utf-8") != text]
    if check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from {SOURCE}: run scripts/gen_codes.py")
        return 1 if stale else 0
    for path, text in rendered().items():
        if path in stale:
            path.write_text(text, "utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
