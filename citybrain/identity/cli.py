"""`citybrain user ...` — account administration from the server console (audited as system:cli)."""

from __future__ import annotations

from typing import Annotated

import typer

from citybrain import context
from citybrain.cli_common import DataDirOpt, open_db, pad
from citybrain.context import Principal
from citybrain.errors import Problem

user_app = typer.Typer(help="用户账号 user accounts", no_args_is_help=True)
CLI = Principal(kind="system", id=None, name="cli", org_scope=None)


def _run(fn):
    context.set_principal(CLI)
    try:
        return fn()
    except Problem as p:
        typer.echo(f"错误 error: {p.detail_zh} / {p.detail_en}", err=True)
        for e in p.errors:
            typer.echo(f"  - {e.get('field')}: {e.get('message')}", err=True)
        raise typer.Exit(1) from None


@user_app.command("add")
def add(
    username: str,
    real_name: Annotated[str, typer.Option("--name", help="Real name 姓名")],
    role: Annotated[list[str], typer.Option("--role", help="Role code; repeat for several")] = [],  # noqa: B006
    org: Annotated[str | None, typer.Option(help="Organisation code")] = None,
    phone: Annotated[str | None, typer.Option()] = None,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)] = "",
    data_dir: DataDirOpt = None,
) -> None:
    """Create a user."""
    from citybrain.identity import service

    db = open_db(data_dir)

    def go():
        with db.write() as s:
            org_id = None
            if org:
                o = service.org_by_code(s, code=org)
                if o is None:
                    raise Problem(f"组织 {org} 不存在", f"No organisation with code {org}", status=404)
                org_id = o.id
            u = service.create_user(s, username=username, real_name=real_name, password=password, org_id=org_id,
                                    phone=phone, roles=role)
            typer.echo(f"已创建 created user {u.username} (id {u.id}) roles={','.join(role) or '-'}")

    _run(go)


@user_app.command("list")
def list_(data_dir: DataDirOpt = None, q: Annotated[str | None, typer.Option(help="Filter text")] = None) -> None:
    """List users (phones masked)."""
    from citybrain.identity import service

    db = open_db(data_dir)
    with db.read() as s:
        total, users = service.list_users(s, q=q, limit=1000)
    typer.echo(f"{'id':>4}  {'username':16} {'name':10} {'phone':13} {'active':6} roles")
    for u in users:
        typer.echo(f"{u['id']:>4}  {pad(u['username'], 16)} {pad(u['real_name'] or '', 10)} {u['phone'] or '-':13} "
                   f"{'yes' if u['active'] else 'no':6} {','.join(u['roles'])}")
    typer.echo(f"{total} users")


def _set_active(username: str, active: bool, data_dir) -> None:
    from citybrain.identity import service

    db = open_db(data_dir)

    def go():
        with db.write() as s:
            u = service.user_by_username(s, username=username)
            if u is None:
                raise Problem(f"用户 {username} 不存在", f"No user {username}", status=404)
            service.update_user(s, user_id=u.id, active=active)
            typer.echo(f"{'已启用 enabled' if active else '已停用 disabled'} {username}")

    _run(go)


@user_app.command("disable")
def disable(username: str, data_dir: DataDirOpt = None) -> None:
    """Disable an account and end its sessions."""
    _set_active(username, False, data_dir)


@user_app.command("enable")
def enable(username: str, data_dir: DataDirOpt = None) -> None:
    """Enable an account."""
    _set_active(username, True, data_dir)


@user_app.command("unlock")
def unlock(username: str, data_dir: DataDirOpt = None) -> None:
    """Clear a login lockout."""
    from citybrain.identity import service

    db = open_db(data_dir)

    def go():
        with db.write() as s:
            u = service.user_by_username(s, username=username)
            if u is None:
                raise Problem(f"用户 {username} 不存在", f"No user {username}", status=404)
            service.unlock_user(s, user_id=u.id)
            typer.echo(f"已解锁 unlocked {username}")

    _run(go)


@user_app.command("password")
def password_(
    username: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)] = "",
    data_dir: DataDirOpt = None,
) -> None:
    """Set a user's password on the server console (also for the security and audit administrators)."""
    from citybrain.identity import service

    db = open_db(data_dir)

    def go():
        with db.write() as s:
            u = service.user_by_username(s, username=username)
            if u is None:
                raise Problem(f"用户 {username} 不存在", f"No user {username}", status=404)
            service.set_password(s, user_id=u.id, password=password)
            typer.echo(f"已重置密码 password set for {username}; its sessions have ended")

    _run(go)


COMMANDS = {"user": user_app}
