"""`citybrain user add|list|disable|enable|unlock|password` on the server console."""

from __future__ import annotations

import unicodedata

from typer.testing import CliRunner

from citybrain.audit import service as audit
from citybrain.cli import app
from tests.conftest import DEMO_PASSWORD

runner = CliRunner()


def run(db, *args, input=None):
    return runner.invoke(app, [*args, "--data-dir", str(db.settings.data_dir)], input=input)


def _login(client, username, password):
    return client.post("/api/v1/auth/token", data={"username": username, "password": password}).status_code


def test_user_add_list_disable_enable(client, db):
    r = run(db, "user", "add", "zhou", "--name", "周河长", "--role", "handler", "--org", "D-SWJ",
            "--phone", "13587654321", "--password", "River#Chief2026")
    assert r.exit_code == 0, r.output
    assert "created user zhou" in r.output
    assert _login(client, "zhou", "River#Chief2026") == 200
    listing = run(db, "user", "list", "--q", "zhou")
    assert listing.exit_code == 0 and "135****4321" in listing.output and "13587654321" not in listing.output
    assert "handler" in listing.output and "1 users" in listing.output
    head, row = listing.output.splitlines()[:2]  # a Chinese name takes two columns a character: columns line up
    prefix = row[:row.index("135****4321")]
    assert head.index("phone") == sum(2 if unicodedata.east_asian_width(c) == "W" else 1 for c in prefix)
    assert run(db, "user", "disable", "zhou").exit_code == 0
    assert _login(client, "zhou", "River#Chief2026") == 403
    assert "no" in run(db, "user", "list", "--q", "zhou").output.splitlines()[1]
    assert run(db, "user", "enable", "zhou").exit_code == 0
    assert _login(client, "zhou", "River#Chief2026") == 200
    with db.read() as s:
        actions = [(r.actor, r.action) for r in audit.search(s, actor="system:cli")[1]]
    assert actions == [("system:cli", "user.enable"), ("system:cli", "user.disable"), ("system:cli", "user.create")]


def test_user_add_prompts_for_the_password(client, db):
    r = run(db, "user", "add", "prompted", "--name", "提示", "--role", "citizen",
            input="Prompt#Pass2026\nPrompt#Pass2026\n")
    assert r.exit_code == 0, r.output
    assert "Prompt#Pass2026" not in r.output
    assert _login(client, "prompted", "Prompt#Pass2026") == 200


def test_user_add_errors_are_clear_and_exit_1(db):
    weak = run(db, "user", "add", "weakling", "--name", "弱", "--password", "password")
    assert weak.exit_code == 1 and "密码不符合安全策略" in weak.output and "Password does not meet" in weak.output
    taken = run(db, "user", "add", "operator", "--name", "重名", "--password", "Another#2026")
    assert taken.exit_code == 1 and "is taken" in taken.output
    combo = run(db, "user", "add", "both", "--name", "兼任", "--role", "sysadmin", "--role", "auditor",
                "--password", "Another#2026")
    assert combo.exit_code == 1 and "Separation of duties" in combo.output
    no_org = run(db, "user", "add", "lost", "--name", "无", "--org", "NOPE", "--password", "Another#2026")
    assert no_org.exit_code == 1 and "NOPE" in no_org.output
    assert run(db, "user", "disable", "ghost").exit_code == 1


def test_console_can_reset_an_administrator_password_and_unlock(client, db):
    for i in range(5):
        _login(client, "auditor", f"wrong{i}")
    assert _login(client, "auditor", DEMO_PASSWORD) == 423
    assert run(db, "user", "unlock", "auditor").exit_code == 0
    r = run(db, "user", "password", "auditor", "--password", "Audit#Again2026")
    assert r.exit_code == 0, r.output
    assert _login(client, "auditor", "Audit#Again2026") == 200
