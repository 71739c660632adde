"""Identity API: login/logout, me, organisations, users, roles, permissions, machine keys."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from citybrain.config import get_settings
from citybrain.context import Principal
from citybrain.deps import SESSION_COOKIE, CurrentUser, ReadDB, WriteDB, require, require_any
from citybrain.errors import Forbidden, Invalid, validation_problem
from citybrain.identity import service
from citybrain.identity.permissions import PERMISSIONS
from citybrain.identity.schemas import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyOut,
    LoginIn,
    MeOut,
    OrgIn,
    OrgOut,
    OrgPatch,
    PasswordIn,
    PermissionOut,
    PermissionsIn,
    RoleIn,
    RoleOut,
    RolesIn,
    TokenOut,
    UserIn,
    UserOut,
    UserPage,
    UserPatch,
)

router = APIRouter(prefix="/api/v1", tags=["identity 统一身份认证"])


async def _login_form(request: Request) -> LoginIn:
    """The login fields, from the OAuth2 password form or from a JSON body (`{"username": …, "password": …}`)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise Invalid("请求体不是有效的 JSON", "The body is not valid JSON", code="bad_json",
                          errors=[{"field": "body", "message": str(exc)}]) from exc
    else:
        data = dict(await request.form())
    try:
        return LoginIn.model_validate(data if isinstance(data, dict) else {})
    except ValidationError as exc:
        raise validation_problem(RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])) from exc


_LOGIN_BODY = {"requestBody": {"required": True, "content": {
    "application/x-www-form-urlencoded": {"schema": LoginIn.model_json_schema()},
    "application/json": {"schema": LoginIn.model_json_schema()}}}}


@router.post("/auth/token", response_model=TokenOut, openapi_extra=_LOGIN_BODY,
             summary="登录 Log in (OAuth2 password form, or JSON)")
def login(request: Request, response: Response, db: WriteDB,
          body: Annotated[LoginIn, Depends(_login_form)]) -> TokenOut:
    ip = request.client.host if request.client else None
    token, _auth = service.login(db, username=body.username, password=body.password, ip=ip)
    s = get_settings()
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", max_age=s.token_max_hours * 3600)
    return TokenOut(access_token=token, expires_in=s.token_max_hours * 3600, idle_timeout=s.idle_timeout_minutes * 60)


@router.post("/auth/logout", status_code=204, summary="退出登录 Log out (revokes the token)")
def logout(db: WriteDB, who: CurrentUser, response: Response) -> Response:
    service.logout(db, principal=who)
    response.delete_cookie(SESSION_COOKIE)
    response.status_code = 204
    return response


@router.get("/me", response_model=MeOut, summary="当前用户 Who am I")
def me(db: ReadDB, who: CurrentUser) -> MeOut:
    org_name = service.get_org(db, org_id=who.org_id).name if who.org_id else None
    return MeOut(id=who.id, kind=who.kind, username=who.name, real_name=who.extra.get("real_name"),
                 org_id=who.org_id, org_name=org_name, roles=sorted(who.roles),
                 permissions=sorted(who.permissions), city_wide=who.org_scope is None)


@router.post("/me/password", status_code=204, summary="修改密码 Change my password")
def change_password(body: PasswordIn, db: WriteDB, who: CurrentUser) -> Response:
    if who.kind != "user" or who.id is None:
        from citybrain.errors import Forbidden

        raise Forbidden("只有用户可以修改密码", "Only users have passwords")
    service.set_password(db, user_id=who.id, password=body.password, old_password=body.old_password or "")
    return Response(status_code=204)


# --- organisations --------------------------------------------------------------------------------------------


@router.get("/orgs", response_model=list[OrgOut], summary="组织机构 Organisations (tree order)")
def list_orgs(db: ReadDB, _who: CurrentUser, type: str | None = None, parent_id: int | None = None) -> list:
    return service.list_orgs(db, type=type, parent_id=parent_id)


@router.get("/orgs/{org_id}", response_model=OrgOut)
def get_org(org_id: int, db: ReadDB, _who: CurrentUser):
    return service.get_org(db, org_id=org_id)


@router.post("/orgs", response_model=OrgOut, status_code=201)
def create_org(body: OrgIn, db: WriteDB, _who: Principal = Depends(require("org.manage"))):
    return service.create_org(db, **body.model_dump())


@router.patch("/orgs/{org_id}", response_model=OrgOut)
def update_org(org_id: int, body: OrgPatch, db: WriteDB, _who: Principal = Depends(require("org.manage"))):
    return service.update_org(db, org_id=org_id, **body.model_dump())


# --- users -------------------------------------------------------------------------------------------------------


USER_READERS = require_any("user.read", "user.directory")
MAX_ID = 2**31 - 1


@router.get("/users", response_model=UserPage,
            summary="用户列表 Users (phones masked; department staff see their own organisation and below)")
def list_users(db: ReadDB, who: Principal = Depends(USER_READERS),
               org_id: int | None = Query(default=None, ge=1, le=MAX_ID),
               q: str | None = Query(default=None, max_length=60), limit: int = Query(50, ge=1, le=500),
               offset: int = Query(0, ge=0, le=10_000_000)) -> UserPage:
    total, items = service.list_users(db, org_id=org_id, q=q, limit=limit, offset=offset, principal=who)
    return UserPage(total=total, items=[UserOut(**u) for u in items])


def _user_out(db, user) -> UserOut:
    return UserOut(**service.user_dict(user, service.user_roles(db, user_id=user.id)))


@router.post("/users", response_model=UserOut, status_code=201,
             summary="新建用户 Create a user (roles are assigned by the security administrator)")
def create_user(body: UserIn, db: WriteDB, _who: Principal = Depends(require("user.manage"))) -> UserOut:
    return _user_out(db, service.create_user(db, **body.model_dump()))


@router.get("/users/{user_id}", response_model=UserOut)
def get_user(user_id: int, db: ReadDB, who: Principal = Depends(USER_READERS)) -> UserOut:
    user = service.get_user(db, user_id=user_id)
    if not who.sees_org(user.org_id):
        service.authorize(who, "user.directory" if who.can("user.directory") else "user.read", org_id=user.org_id)
    return _user_out(db, user)


@router.patch("/users/{user_id}", response_model=UserOut)
def update_user(user_id: int, body: UserPatch, db: WriteDB,
                _who: Principal = Depends(require("user.manage"))) -> UserOut:
    return _user_out(db, service.update_user(db, user_id=user_id, **body.model_dump()))


@router.post("/users/{user_id}/unlock", response_model=UserOut)
def unlock_user(user_id: int, db: WriteDB, _who: Principal = Depends(require("user.manage"))) -> UserOut:
    return _user_out(db, service.unlock_user(db, user_id=user_id))


@router.post("/users/{user_id}/password", status_code=204, summary="重置密码 Reset a user's password")
def reset_password(user_id: int, body: PasswordIn, db: WriteDB,
                   who: Principal = Depends(require("user.manage"))) -> Response:
    target = service.get_user(db, user_id=user_id)
    if target.id != who.id and set(service.user_roles(db, user_id=target.id)) & {"secadmin", "auditor"}:
        raise Forbidden("三权分立：安全管理员和审计管理员的密码只能由本人或在服务器控制台（citybrain user password）重置",
                        "Separation of duties: security and audit administrators' passwords are reset only by "
                        "themselves or on the server console (citybrain user password)",
                        code="separation_of_duties")
    service.set_password(db, user_id=user_id, password=body.password)
    return Response(status_code=204)


@router.put("/users/{user_id}/roles", response_model=UserOut, summary="分配角色 Assign roles")
def set_roles(user_id: int, body: RolesIn, db: WriteDB, _who: Principal = Depends(require("role.assign"))) -> UserOut:
    service.set_user_roles(db, user_id=user_id, roles=body.roles)
    return _user_out(db, service.get_user(db, user_id=user_id))


# --- roles and permissions -----------------------------------------------------------------------------------------


@router.get("/permissions", response_model=list[PermissionOut])
def list_permissions(_who: CurrentUser) -> list[PermissionOut]:
    return [PermissionOut(code=c, name=zh, name_en=en) for c, (zh, en) in PERMISSIONS.items()]


@router.get("/roles", response_model=list[RoleOut])
def list_roles(db: ReadDB, _who: CurrentUser) -> list:
    return service.list_roles(db)


@router.post("/roles", response_model=RoleOut, status_code=201)
def create_role(body: RoleIn, db: WriteDB, _who: Principal = Depends(require("role.manage"))):
    service.create_role(db, **body.model_dump())
    return next(r for r in service.list_roles(db) if r["code"] == body.code)


@router.put("/roles/{code}/permissions", response_model=RoleOut)
def set_role_permissions(code: str, body: PermissionsIn, db: WriteDB,
                         _who: Principal = Depends(require("role.manage"))):
    service.set_role_permissions(db, code=code, permissions=body.permissions)
    return next(r for r in service.list_roles(db) if r["code"] == code)


# --- machine credentials -------------------------------------------------------------------------------------------


@router.get("/apikeys", response_model=list[ApiKeyOut])
def list_keys(db: ReadDB, _who: Principal = Depends(require("apikey.manage")), org_id: int | None = None) -> list:
    return service.list_api_keys(db, org_id=org_id)


@router.post("/apikeys", response_model=ApiKeyCreated, status_code=201, summary="签发机器凭证 Issue a machine key")
def create_key(body: ApiKeyIn, db: WriteDB, who: Principal = Depends(require("apikey.manage"))) -> ApiKeyCreated:
    key, row = service.create_api_key(db, created_by=who.label, **body.model_dump())
    return ApiKeyCreated(key=key, **service._key_dict(row))


@router.delete("/apikeys/{key_id}", status_code=204)
def revoke_key(key_id: int, db: WriteDB, _who: Principal = Depends(require("apikey.manage"))) -> Response:
    service.revoke_api_key(db, key_id=key_id)
    return Response(status_code=204)
