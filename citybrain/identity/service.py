"""Identity service: organisations, users, roles, logins, sessions and machine credentials.

Other modules use: `org_subtree_ids`, `get_org`, `org_by_code`, `list_orgs`, `authorize`, `scope_filter`,
`principal_from_token`, `principal_from_api_key`, `create_api_key`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Iterable
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import ColumnElement, delete, false, func, or_, select, update
from sqlalchemy.orm import Session

from citybrain import context
from citybrain.audit import service as audit
from citybrain.config import get_settings
from citybrain.context import Principal
from citybrain.db import utcnow
from citybrain.errors import Conflict, Forbidden, Invalid, Locked, NotFound, Unauthorized
from citybrain.identity.models import (
    ORG_TYPES,
    ApiKey,
    AuthSession,
    Org,
    Permission,
    Role,
    RolePermission,
    User,
    UserRole,
)
from citybrain.identity.permissions import ADMIN_PERMISSIONS, ADMIN_ROLES, PERMISSIONS, ROLES
from citybrain.masking import mask_phone

_hasher = PasswordHasher()  # argon2id, library defaults (RFC 9106 low-memory profile)
_DUMMY_HASH = _hasher.hash("citybrain-dummy-password")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{2,60}$")


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# --- passwords ---------------------------------------------------------------------------------


def check_password_policy(*, password: str, username: str | None = None) -> None:
    """Raise 422 unless the password meets the policy (length, character classes, not the username)."""
    s = get_settings()
    classes = sum(
        bool(re.search(p, password)) for p in (r"[a-z]", r"[A-Z]", r"\d", r"[^A-Za-z0-9]")
    )
    problems = []
    if len(password) < s.password_min_length:
        problems.append(f"至少 {s.password_min_length} 个字符 / at least {s.password_min_length} characters")
    if classes < s.password_min_classes:
        problems.append(
            f"至少包含大写、小写、数字、符号中的 {s.password_min_classes} 类 / "
            f"at least {s.password_min_classes} of upper case, lower case, digits, symbols"
        )
    if username and username.lower() in password.lower():
        problems.append("不能包含用户名 / must not contain the username")
    if problems:
        raise Invalid(
            "密码不符合安全策略：" + "；".join(p.split(" / ")[0] for p in problems),
            "Password does not meet the policy: " + "; ".join(p.split(" / ")[1] for p in problems),
            code="weak_password",
            errors=[{"field": "password", "message": p} for p in problems],
        )


def hash_password(*, password: str) -> str:
    """An Argon2id hash of the password."""
    return _hasher.hash(password)


def verify_password(*, password_hash: str, password: str) -> bool:
    """True if the password matches the hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# --- roles ---------------------------------------------------------------------------------------


def ensure_builtin_roles(session: Session) -> None:
    """Create missing built-in roles and give built-in roles the permissions this version introduces."""
    known = set(session.scalars(select(Permission.code)))
    new_perms = set(PERMISSIONS) - known
    roles = {r.code: r for r in session.scalars(select(Role))}
    changed = False
    for code, rd in ROLES.items():
        role = roles.get(code)
        if role is None:
            role = Role(code=code, name=rd.name, name_en=rd.name_en, city_wide=rd.city_wide, builtin=True)
            session.add(role)
            session.flush()
            grant = rd.permissions
        else:
            grant = rd.permissions & new_perms
        for p in grant:
            session.add(RolePermission(role_id=role.id, permission=p))
            changed = True
    for p in new_perms:
        session.add(Permission(code=p))
        changed = True
    if changed:
        audit.commit(session, action="role.builtin.sync", target_type="role", actor=context.SYSTEM,
                     after={"new_permissions": sorted(new_perms)})


def list_roles(session: Session) -> list[dict[str, Any]]:
    """Every role with its permissions."""
    grants: dict[int, list[str]] = {}
    for rp in session.scalars(select(RolePermission)):
        grants.setdefault(rp.role_id, []).append(rp.permission)
    return [
        {"code": r.code, "name": r.name, "name_en": r.name_en, "city_wide": r.city_wide, "builtin": r.builtin,
         "permissions": sorted(grants.get(r.id, []))}
        for r in session.scalars(select(Role).order_by(Role.id))
    ]


def _role(session: Session, code: str) -> Role:
    role = session.scalar(select(Role).where(Role.code == code))
    if role is None:
        raise NotFound(f"角色 {code} 不存在", f"Role {code} does not exist", code="role_not_found")
    return role


def create_role(session: Session, *, code: str, name: str, name_en: str, city_wide: bool,
                permissions: Iterable[str]) -> Role:
    """Create a custom role (security administrator)."""
    if session.scalar(select(Role).where(Role.code == code)):
        raise Conflict(f"角色 {code} 已存在", f"Role {code} already exists", code="role_exists")
    perms = _checked_permissions(code, set(permissions))
    role = Role(code=code, name=name, name_en=name_en, city_wide=city_wide, builtin=False)
    session.add(role)
    session.flush()
    for p in perms:
        session.add(RolePermission(role_id=role.id, permission=p))
    audit.commit(session, action="role.create", target_type="role", target_id=code,
                 after={"name": name, "city_wide": city_wide, "permissions": sorted(perms)})
    return role


def _checked_permissions(role_code: str, perms: set[str]) -> set[str]:
    unknown = perms - PERMISSIONS.keys()
    if unknown:
        raise Invalid(f"未知权限：{'、'.join(sorted(unknown))}", f"Unknown permissions: {', '.join(sorted(unknown))}",
                      errors=[{"field": "permissions", "message": f"unknown: {p}"} for p in sorted(unknown)])
    if role_code not in ADMIN_ROLES and perms & ADMIN_PERMISSIONS:
        bad = sorted(perms & ADMIN_PERMISSIONS)
        raise Forbidden(
            f"三权分立：管理员专属权限不能授予其他角色（{'、'.join(bad)}）",
            f"Separation of duties: administrator permissions cannot go to other roles ({', '.join(bad)})",
            code="separation_of_duties",
        )
    return perms


def set_role_permissions(session: Session, *, code: str, permissions: Iterable[str]) -> Role:
    """Replace a role's permissions (security administrator); the three administrator roles are fixed."""
    role = _role(session, code)
    if code in ADMIN_ROLES:
        raise Forbidden("三权分立：系统、安全、审计管理员的权限不可修改",
                        "Separation of duties: the three administrator roles cannot be changed",
                        code="separation_of_duties")
    perms = _checked_permissions(code, set(permissions))
    before = sorted(session.scalars(select(RolePermission.permission).where(RolePermission.role_id == role.id)))
    session.execute(delete(RolePermission).where(RolePermission.role_id == role.id))
    for p in perms:
        session.add(RolePermission(role_id=role.id, permission=p))
    audit.commit(session, action="role.permissions.set", target_type="role", target_id=code,
                 before={"permissions": before}, after={"permissions": sorted(perms)})
    return role


# --- organisations ---------------------------------------------------------------------------------


def get_org(session: Session, *, org_id: int) -> Org:
    """An organisation by id (404 if none)."""
    org = session.get(Org, org_id)
    if org is None:
        raise NotFound(f"组织 {org_id} 不存在", f"Organisation {org_id} does not exist", code="org_not_found")
    return org


def org_by_code(session: Session, *, code: str) -> Org | None:
    """An organisation by its code, or None."""
    return session.scalar(select(Org).where(Org.code == code))


def list_orgs(session: Session, *, type: str | None = None, parent_id: int | None = None) -> list[Org]:
    """Organisations, optionally of one type or under one parent, in tree order."""
    q = select(Org).order_by(Org.path)
    if type:
        q = q.where(Org.type == type)
    if parent_id is not None:
        q = q.where(Org.parent_id == parent_id)
    return list(session.scalars(q))


def org_subtree_ids(session: Session, *, org_id: int) -> frozenset[int]:
    """The organisation and everything below it."""
    org = session.get(Org, org_id)
    if org is None:
        return frozenset()
    return frozenset(session.scalars(select(Org.id).where(Org.path.startswith(org.path))))


def org_dict(org: Org) -> dict[str, Any]:
    """An organisation as a plain dict (audit summaries, API)."""
    return {"id": org.id, "code": org.code, "name": org.name, "type": org.type, "parent_id": org.parent_id,
            "division_code": org.division_code, "active": org.active}


def create_org(session: Session, *, code: str, name: str, type: str, parent_id: int | None = None,
               name_en: str | None = None, division_code: str | None = None,
               credit_code: str | None = None) -> Org:
    """Add an organisation to the tree."""
    if type not in ORG_TYPES:
        raise Invalid(f"组织类型必须是 {', '.join(ORG_TYPES)}", f"type must be one of {', '.join(ORG_TYPES)}",
                      errors=[{"field": "type", "message": "unknown organisation type"}])
    if type in ("district", "town", "community") and not division_code:
        raise Invalid("区域类组织必须填写行政区划代码", "Area organisations need an administrative division code",
                      errors=[{"field": "division_code", "message": "required for district/town/community"}])
    if session.scalar(select(Org.id).where(Org.code == code)):
        raise Conflict(f"组织编码 {code} 已存在", f"Organisation code {code} already exists", code="org_exists")
    parent = get_org(session, org_id=parent_id) if parent_id is not None else None
    org = Org(code=code, name=name, name_en=name_en, type=type, parent_id=parent_id,
              division_code=division_code, credit_code=credit_code, path="/")
    session.add(org)
    session.flush()
    org.path = f"{parent.path if parent else '/'}{org.id}/"
    audit.commit(session, action="org.create", target_type="org", target_id=org.id, after=org_dict(org))
    return org


def update_org(session: Session, *, org_id: int, name: str | None = None, name_en: str | None = None,
               active: bool | None = None) -> Org:
    """Rename, or (de)activate, an organisation."""
    org = get_org(session, org_id=org_id)
    before = org_dict(org)
    if name is not None:
        org.name = name
    if name_en is not None:
        org.name_en = name_en
    if active is not None:
        org.active = active
    audit.commit(session, action="org.update", target_type="org", target_id=org.id, before=before, after=org_dict(org))
    return org


# --- users ---------------------------------------------------------------------------------------------


def user_dict(user: User, roles: list[str] | None = None, *, masked: bool = True) -> dict[str, Any]:
    """A user as a plain dict, phone masked unless asked otherwise."""
    d = {"id": user.id, "username": user.username, "real_name": user.real_name,
         "phone": mask_phone(user.phone) if masked else user.phone, "org_id": user.org_id, "active": user.active,
         "locked_until": user.locked_until, "last_login_at": user.last_login_at}
    if roles is not None:
        d["roles"] = roles
    return d


def user_roles(session: Session, *, user_id: int) -> list[str]:
    """The role codes a user holds."""
    return sorted(session.scalars(
        select(Role.code).join(UserRole, UserRole.role_id == Role.id).where(UserRole.user_id == user_id)))


def get_user(session: Session, *, user_id: int) -> User:
    """A user by id (404 if none)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"用户 {user_id} 不存在", f"User {user_id} does not exist", code="user_not_found")
    return user


def user_by_username(session: Session, *, username: str) -> User | None:
    """A user by username, or None."""
    return session.scalar(select(User).where(User.username == username))


def list_users(session: Session, *, org_id: int | None = None, q: str | None = None, limit: int = 50,
               offset: int = 0, principal: Principal | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Users (phones masked) with their roles, by organisation subtree and text, within the principal's scope."""
    stmt = select(User)
    if principal is not None:
        if org_id is not None and not principal.sees_org(org_id):
            authorize(principal, "user.directory" if principal.can("user.directory") else "user.read",
                      org_id=org_id)
        cond = scope_filter(principal, User.org_id)
        if cond is not None:
            stmt = stmt.where(cond)
    if org_id is not None:
        stmt = stmt.where(User.org_id.in_(org_subtree_ids(session, org_id=org_id)))
    if q:
        stmt = stmt.where(or_(User.username.contains(q, autoescape=True),
                              User.real_name.contains(q, autoescape=True)))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    users = session.scalars(stmt.order_by(User.id).limit(limit).offset(offset)).all()
    return total, [user_dict(u, user_roles(session, user_id=u.id)) for u in users]


def _check_role_combination(roles: set[str]) -> None:
    admins = roles & set(ADMIN_ROLES)
    if len(admins) > 1 or (admins and roles - admins):
        raise Forbidden(
            "三权分立：系统管理员、安全管理员、审计管理员不能兼任，也不能兼任业务角色",
            "Separation of duties: the system, security and audit administrator roles cannot be combined "
            "with each other or with business roles",
            code="separation_of_duties",
        )


def create_user(session: Session, *, username: str, real_name: str, password: str, org_id: int | None,
                phone: str | None = None, roles: Iterable[str] = ()) -> User:
    """Create a user account (roles may be given only by the console or the security administrator)."""
    if not USERNAME_RE.match(username):
        raise Invalid("用户名只能包含字母、数字、下划线、点和连字符（2-60 个字符）",
                      "Username must be 2-60 letters, digits, '_', '.' or '-'",
                      errors=[{"field": "username", "message": "invalid characters or length"}])
    if user_by_username(session, username=username):
        raise Conflict(f"用户名 {username} 已被使用", f"Username {username} is taken", code="user_exists")
    check_password_policy(password=password, username=username)
    if org_id is not None:
        get_org(session, org_id=org_id)
    role_set = set(roles)
    _check_role_combination(role_set)
    user = User(username=username, real_name=real_name, phone=phone, org_id=org_id,
                password_hash=hash_password(password=password), password_changed_at=utcnow())
    session.add(user)
    session.flush()
    for code in sorted(role_set):
        session.add(UserRole(user_id=user.id, role_id=_role(session, code).id))
    audit.commit(session, action="user.create", target_type="user", target_id=user.id,
                 after=user_dict(user, sorted(role_set)))
    return user


def set_user_roles(session: Session, *, user_id: int, roles: Iterable[str]) -> list[str]:
    """Replace a user's roles (security administrator; nobody may change their own roles)."""
    user = get_user(session, user_id=user_id)
    role_set = set(roles)
    who = context.actor()
    if who.kind == "user" and who.id == user.id:
        raise Forbidden("三权分立：不能修改自己的角色", "Separation of duties: you cannot change your own roles",
                        code="separation_of_duties")
    _check_role_combination(role_set)
    before = user_roles(session, user_id=user.id)
    ids = [_role(session, c).id for c in sorted(role_set)]
    session.execute(delete(UserRole).where(UserRole.user_id == user.id))
    for rid in ids:
        session.add(UserRole(user_id=user.id, role_id=rid))
    _revoke_sessions(session, user.id)
    audit.commit(session, action="user.roles.set", target_type="user", target_id=user.id,
                 before={"roles": before}, after={"roles": sorted(role_set)})
    return sorted(role_set)


def update_user(session: Session, *, user_id: int, real_name: str | None = None, phone: str | None = None,
                org_id: int | None = None, active: bool | None = None) -> User:
    """Change a user's details or disable/enable the account (disabling ends its sessions)."""
    user = get_user(session, user_id=user_id)
    before = user_dict(user)
    if real_name is not None:
        user.real_name = real_name
    if phone is not None:
        user.phone = phone
    if org_id is not None:
        get_org(session, org_id=org_id)
        user.org_id = org_id
    if active is not None:
        user.active = active
        if not active:
            _revoke_sessions(session, user.id)
    action = "user.disable" if active is False else "user.enable" if active else "user.update"
    audit.commit(session, action=action, target_type="user", target_id=user.id, before=before, after=user_dict(user))
    return user


def unlock_user(session: Session, *, user_id: int) -> User:
    """Clear a lockout."""
    user = get_user(session, user_id=user_id)
    user.failed_logins, user.locked_until = 0, None
    audit.commit(session, action="user.unlock", target_type="user", target_id=user.id)
    return user


def set_password(session: Session, *, user_id: int, password: str, old_password: str | None = None) -> None:
    """Set a new password (the user's own change needs the old one); ends other sessions."""
    user = get_user(session, user_id=user_id)
    if old_password is not None and not verify_password(password_hash=user.password_hash, password=old_password):
        raise Forbidden("原密码不正确", "The current password is wrong", code="wrong_password")
    check_password_policy(password=password, username=user.username)
    user.password_hash = hash_password(password=password)
    user.password_changed_at = utcnow()
    _revoke_sessions(session, user.id)
    audit.commit(session, action="user.password.set", target_type="user", target_id=user.id,
                 note="own change" if old_password is not None else "reset by administrator")


# --- login and sessions -------------------------------------------------------------------------------------


def _revoke_sessions(session: Session, user_id: int) -> None:
    session.execute(update(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))


def login(session: Session, *, username: str, password: str, ip: str | None = None) -> tuple[str, AuthSession]:
    """Check a password and open a session; count failures and lock after too many."""
    s = get_settings()
    now = utcnow()
    claimant = Principal(kind="anonymous", id=None, name="anonymous")
    user = user_by_username(session, username=username)
    if user is None:
        verify_password(password_hash=_DUMMY_HASH, password=password)  # same cost as a real check
        audit.commit(session, action="auth.login", target_type="user", target_id=username[:80], outcome="failure",
                     note="unknown username", actor=claimant)
        raise Unauthorized("用户名或密码错误", "Wrong username or password", code="bad_credentials")
    if user.locked_until and user.locked_until > now:
        audit.commit(session, action="auth.login", target_type="user", target_id=user.id, outcome="denied",
                     note="account locked", actor=claimant)
        minutes = max(1, int((user.locked_until - now).total_seconds() // 60) + 1)
        raise Locked(f"登录失败次数过多，账号已锁定，请 {minutes} 分钟后再试",
                     f"Too many failed logins; the account is locked for {minutes} more minute(s)",
                     locked_until=user.locked_until.isoformat())
    if not verify_password(password_hash=user.password_hash, password=password):
        user.failed_logins += 1
        note = f"wrong password ({user.failed_logins})"
        if user.failed_logins >= s.login_max_failures:
            user.locked_until = now + dt.timedelta(minutes=s.lockout_minutes)
            user.failed_logins = 0
            note += f"; locked for {s.lockout_minutes} minutes"
        audit.commit(session, action="auth.login", target_type="user", target_id=user.id, outcome="failure", note=note,
                     actor=claimant)
        raise Unauthorized("用户名或密码错误", "Wrong username or password", code="bad_credentials")
    if not user.active:
        audit.commit(session, action="auth.login", target_type="user", target_id=user.id, outcome="denied",
                     note="account disabled", actor=claimant)
        raise Forbidden("账号已停用", "The account is disabled", code="account_disabled")
    token = "cbt_" + secrets.token_urlsafe(32)
    auth = AuthSession(token_hash=_sha256(token), user_id=user.id, created_at=now, last_seen_at=now,
                       expires_at=now + dt.timedelta(hours=s.token_max_hours), ip=ip)
    session.add(auth)
    user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
    session.flush()
    audit.commit(session, action="auth.login", target_type="user", target_id=user.id,
                 actor=Principal(kind="user", id=user.id, name=user.username, org_id=user.org_id),
                 after={"session_id": auth.id})
    return token, auth


def principal_for_user(session: Session, *, user: User, session_id: int | None = None) -> Principal:
    """The principal of a user: roles, permissions and data scope."""
    rows = session.execute(
        select(Role.code, Role.city_wide, RolePermission.permission)
        .join(UserRole, UserRole.role_id == Role.id)
        .outerjoin(RolePermission, RolePermission.role_id == Role.id)
        .where(UserRole.user_id == user.id)
    ).all()
    roles = frozenset(r.code for r in rows)
    perms = frozenset(r.permission for r in rows if r.permission)
    city_wide = any(r.city_wide for r in rows)
    scope = None if city_wide else (org_subtree_ids(session, org_id=user.org_id) if user.org_id else frozenset())
    return Principal(kind="user", id=user.id, name=user.username, org_id=user.org_id, roles=roles,
                     permissions=perms, org_scope=scope, session_id=session_id,
                     extra={"real_name": user.real_name})


def principal_from_token(session: Session, *, token: str, touch: bool = True) -> Principal:
    """The principal behind a bearer token; 401 if it is unknown, revoked, expired or idle too long.

    `touch=False` checks the token without counting as activity (long-lived streams re-checking it)."""
    s = get_settings()
    now = utcnow()
    auth = session.scalar(select(AuthSession).where(AuthSession.token_hash == _sha256(token)))
    if auth is None or auth.revoked_at is not None:
        raise Unauthorized("登录已失效，请重新登录", "Session is not valid; please log in again", code="invalid_token")
    if auth.expires_at <= now:
        raise Unauthorized("登录已过期，请重新登录", "Session expired; please log in again", code="session_expired")
    if now - auth.last_seen_at > dt.timedelta(minutes=s.idle_timeout_minutes):
        auth.revoked_at = now
        audit.commit(session, action="auth.idle_timeout", target_type="session", target_id=auth.id,
                     actor=Principal(kind="system", id=None, name="system"))
        raise Unauthorized(f"超过 {s.idle_timeout_minutes} 分钟未操作，请重新登录",
                           f"Idle for more than {s.idle_timeout_minutes} minutes; please log in again",
                           code="session_idle")
    user = session.get(User, auth.user_id)
    if user is None or not user.active:
        raise Unauthorized("账号不可用", "The account is not available", code="invalid_token")
    if touch and (now - auth.last_seen_at).total_seconds() > 30:
        auth.last_seen_at = now
        session.commit()
    return principal_for_user(session, user=user, session_id=auth.id)


def logout(session: Session, *, principal: Principal) -> None:
    """End the principal's session."""
    if principal.session_id is None:
        return
    session.execute(update(AuthSession).where(AuthSession.id == principal.session_id).values(revoked_at=utcnow()))
    audit.commit(session, action="auth.logout", target_type="session", target_id=principal.session_id,
                 actor=principal)


# --- machine credentials ----------------------------------------------------------------------------------------


def _key_dict(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "prefix": k.prefix, "name": k.name, "kind": k.kind, "org_id": k.org_id,
            "scopes": list(k.scopes or []), "subject": k.subject, "created_by": k.created_by,
            "created_at": k.created_at, "expires_at": k.expires_at, "revoked_at": k.revoked_at,
            "last_used_at": k.last_used_at}


def create_api_key(session: Session, *, name: str, scopes: Iterable[str], kind: str = "consumer",
                   org_id: int | None = None, subject: str | None = None,
                   expires_at: dt.datetime | None = None, created_by: str = "system") -> tuple[str, ApiKey]:
    """Issue a scoped machine key; the full key is returned once and only its hash is kept."""
    scope_set = set(scopes)
    unknown = scope_set - PERMISSIONS.keys()
    if unknown or scope_set & ADMIN_PERMISSIONS:
        bad = sorted(unknown | (scope_set & ADMIN_PERMISSIONS))
        raise Invalid(f"机器凭证不能使用这些权限：{'、'.join(bad)}", f"Keys cannot carry: {', '.join(bad)}",
                      errors=[{"field": "scopes", "message": p} for p in bad])
    if org_id is not None:
        get_org(session, org_id=org_id)
    prefix, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    key = ApiKey(prefix=prefix, secret_hash=_sha256(secret), name=name, kind=kind, org_id=org_id,
                 scopes=sorted(scope_set), subject=subject, created_by=created_by, expires_at=expires_at)
    session.add(key)
    session.flush()
    audit.commit(session, action="apikey.create", target_type="apikey", target_id=key.id, after=_key_dict(key))
    return f"cbk_{prefix}_{secret}", key


def list_api_keys(session: Session, *, org_id: int | None = None) -> list[dict[str, Any]]:
    """Machine keys (never their secrets)."""
    q = select(ApiKey).order_by(ApiKey.id)
    if org_id is not None:
        q = q.where(ApiKey.org_id == org_id)
    return [_key_dict(k) for k in session.scalars(q)]


def revoke_api_key(session: Session, *, key_id: int) -> None:
    """Revoke a machine key at once."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"凭证 {key_id} 不存在", f"Key {key_id} does not exist", code="apikey_not_found")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    audit.commit(session, action="apikey.revoke", target_type="apikey", target_id=key.id)


def principal_from_api_key(session: Session, *, key: str) -> Principal:
    """The principal behind a machine key; 401 if it is malformed, unknown, revoked or expired."""
    parts = key.split("_", 2)
    bad = Unauthorized("机器凭证无效", "Invalid API key", code="invalid_api_key")
    if len(parts) != 3 or parts[0] != "cbk":
        raise bad
    k = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if k is None or not secrets.compare_digest(k.secret_hash, _sha256(parts[2])):
        raise bad
    now = utcnow()
    if k.revoked_at is not None or (k.expires_at is not None and k.expires_at <= now):
        raise Unauthorized("机器凭证已吊销或过期", "The API key is revoked or expired", code="revoked_api_key")
    if k.last_used_at is None or (now - k.last_used_at).total_seconds() > 60:
        k.last_used_at = now
        session.commit()
    scope = org_subtree_ids(session, org_id=k.org_id) if k.org_id else frozenset()
    return Principal(kind="apikey", id=k.id, name=k.name, org_id=k.org_id, roles=frozenset({f"key:{k.kind}"}),
                     permissions=frozenset(k.scopes or []), org_scope=scope, extra={"subject": k.subject})


# --- authorisation ---------------------------------------------------------------------------------------------------


def authorize(principal: Principal, permission: str, *, org_id: int | None = None, record: bool = True) -> None:
    """Raise 403 unless the principal holds the permission (and, if given, the organisation is in scope).

    The denial is audited: inside an HTTP request after the request's own transaction has ended (so a
    caller holding a write transaction never waits on itself), elsewhere at once in its own transaction.
    """
    if principal.can(permission) and (org_id is None or principal.sees_org(org_id)):
        return
    zh, en = PERMISSIONS.get(permission, (permission, permission))
    if principal.can(permission):
        problem = Forbidden("该数据不在您的管辖范围内", "That record is outside your organisation's scope",
                            code="out_of_scope")
    else:
        problem = Forbidden(f"没有权限：{zh}", f"Permission required: {en}", code="permission_denied",
                            permission=permission)
    if record:
        denial = {"action": permission, "target_type": "permission", "target_id": permission, "outcome": "denied",
                  "actor": principal, "note": None if org_id is None else f"org {org_id} outside scope"}
        if context.current().request_id is not None:
            problem.audit = denial  # written by the problem handler in citybrain.errors
        else:
            audit.record_alone(**denial)
    raise problem


def scope_filter(principal: Principal, column: Any) -> ColumnElement[bool] | None:
    """A WHERE condition keeping rows whose organisation `column` lies in the principal's data scope.

    None for city-wide principals (no restriction); a condition matching nothing for an empty scope.
    Use it in every list query of private data: `q = q.where(c) if (c := scope_filter(who, T.org_id)) is not None`.
    """
    if principal.org_scope is None:
        return None
    if not principal.org_scope:
        return false()
    return column.in_(sorted(principal.org_scope))
