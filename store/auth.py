"""etcd v3 auth's store: users, roles, their permissions, enabled, revision.

Theory of operation
-------------------
Three databases in the keyspace's environment, changed only by applying
committed entries (store/apply.py), so every member holds the same auth state
and a snapshot carries it (see store/LAYOUT.md):

  auth_users  user name (UTF-8) -> CBOR [password hash, [role, ...], no_password]
  auth_roles  role name (UTF-8) -> CBOR [[perm_type, key, range_end], ...]
  auth_meta   b"enabled" -> b"\\x01" | b"\\x00";  b"revision" -> 8 bytes, big-endian

The auth revision counts every change (etcd's auth revision): a token
records the revision it was issued at, and the doors compare, so a change of
permissions takes effect for every open token at once.

etcd's rules, with etcd's errors: AuthEnable needs a root user holding the
root role; the root user cannot be deleted, nor lose the root role, while
auth is enabled; names are not empty; granting a role that does not exist,
revoking one not granted, or a permission not granted, are errors. Hashing
happens before the log (the door), so this module only stores hashes.
"""

from __future__ import annotations

import cbor2

from store.auth_rules import ROOT, Grant, grants_of, permitted, required_access
from transport.errors import (
    AuthNotEnabledError,
    InvalidArgumentError,
    InvalidAuthManagementError,
    PermissionDeniedError,
    PermissionNotGrantedError,
    RoleAlreadyExistError,
    RoleEmptyError,
    RoleNotFoundError,
    RoleNotGrantedError,
    RootRoleNotExistError,
    RootUserNotExistError,
    UserAlreadyExistError,
    UserEmptyError,
    UserNotFoundError,
)
from transport.messages import Permission

DATABASES = {b"auth_users": (False, False), b"auth_roles": (False, False), b"auth_meta": (False, False)}
_ENABLED = b"enabled"
MAX_NAME_BYTES = 511  # LMDB's key limit in standard builds
_REVISION = b"revision"


class AuthStore:
    """The auth state seen through a caller's LMDB transaction."""

    def __init__(self, env):
        self.users_db = env.open_db(b"auth_users")
        self.roles_db = env.open_db(b"auth_roles")
        self.meta_db = env.open_db(b"auth_meta")

    # ------------------------------------------------------------------ reads

    def enabled(self, txn) -> bool:
        return txn.get(_ENABLED, db=self.meta_db) == b"\x01"

    def revision(self, txn) -> int:
        value = txn.get(_REVISION, db=self.meta_db)
        return int.from_bytes(value, "big") if value else 0

    def user(self, txn, name: str) -> tuple[str, tuple[str, ...], bool] | None:
        """(password hash, roles, no_password), None if there is no such user."""
        key = name.encode()
        if not key or len(key) > MAX_NAME_BYTES:
            return None  # no such user can exist (LMDB refuses such keys): user "" is a request without a token
        value = txn.get(key, db=self.users_db)
        if value is None:
            return None
        password_hash, roles, no_password = cbor2.loads(value)
        return password_hash, tuple(roles), no_password

    def users(self, txn) -> tuple[str, ...]:
        return tuple(key.decode() for key, _ in txn.cursor(db=self.users_db))

    def role(self, txn, name: str) -> tuple[Permission, ...] | None:
        key = name.encode()
        if not key or len(key) > MAX_NAME_BYTES:
            return None  # no such role can exist (LMDB refuses such keys)
        value = txn.get(key, db=self.roles_db)
        if value is None:
            return None
        return tuple(Permission(*permission) for permission in cbor2.loads(value))

    def roles(self, txn) -> tuple[str, ...]:
        return tuple(key.decode() for key, _ in txn.cursor(db=self.roles_db))

    def check(self, txn, user: str, request) -> None:
        """PermissionDenied unless `user` may make `request` (auth enabled)."""
        found = self.user(txn, user)
        if found is None:
            raise PermissionDeniedError()
        roles = found[1]
        if ROOT in roles:
            return
        permissions = {role: tuple((p.perm_type, p.key, p.range_end) for p in self.role(txn, role) or ()) for role in roles}
        grants: list[Grant] = grants_of(permissions, roles)
        if not permitted(roles, grants, required_access(request)):
            raise PermissionDeniedError()

    # ------------------------------------------------------------------ changes (apply only)

    def _bump(self, txn) -> None:
        txn.put(_REVISION, (self.revision(txn) + 1).to_bytes(8, "big"), db=self.meta_db)

    def _put_user(self, txn, name: str, password_hash: str, roles, no_password: bool) -> None:
        txn.put(name.encode(), cbor2.dumps([password_hash, sorted(set(roles)), no_password]), db=self.users_db)
        self._bump(txn)

    def _put_role(self, txn, name: str, permissions) -> None:
        rows = sorted({(p.perm_type, p.key, p.range_end) for p in permissions}, key=lambda row: (row[1], row[2], row[0]))
        txn.put(name.encode(), cbor2.dumps([list(row) for row in rows]), db=self.roles_db)
        self._bump(txn)

    def enable(self, txn) -> None:
        root = self.user(txn, ROOT)
        if root is None:
            raise RootUserNotExistError()
        if ROOT not in root[1]:
            raise RootRoleNotExistError()
        txn.put(_ENABLED, b"\x01", db=self.meta_db)
        self._bump(txn)

    def disable(self, txn) -> None:
        txn.put(_ENABLED, b"\x00", db=self.meta_db)
        self._bump(txn)

    def user_add(self, txn, name: str, password_hash: str, no_password: bool) -> None:
        if not name:
            raise UserEmptyError()
        _check_length(name)
        if self.user(txn, name) is not None:
            raise UserAlreadyExistError()
        self._put_user(txn, name, password_hash, (), no_password)

    def user_delete(self, txn, name: str) -> None:
        if self.enabled(txn) and name == ROOT:
            raise InvalidAuthManagementError()
        if self.user(txn, name) is None or not txn.delete(name.encode(), db=self.users_db):
            raise UserEmptyError() if not name else UserNotFoundError()
        self._bump(txn)

    def user_change_password(self, txn, name: str, password_hash: str) -> None:
        found = self.existing_user(txn, name)
        self._put_user(txn, name, password_hash, found[1], False)

    def user_grant_role(self, txn, name: str, role: str) -> None:
        found = self.existing_user(txn, name)
        if self.role(txn, role) is None:  # root too: `role add root` comes first, as in etcd
            raise RoleNotFoundError()
        self._put_user(txn, name, found[0], found[1] + (role,), found[2])

    def user_revoke_role(self, txn, name: str, role: str) -> None:
        if self.enabled(txn) and name == ROOT and role == ROOT:
            raise InvalidAuthManagementError()
        found = self.existing_user(txn, name)
        if role not in found[1]:
            raise RoleNotGrantedError()
        self._put_user(txn, name, found[0], tuple(r for r in found[1] if r != role), found[2])

    def role_add(self, txn, name: str) -> None:
        if not name:
            raise RoleEmptyError()
        _check_length(name)
        if self.role(txn, name) is not None:
            raise RoleAlreadyExistError()
        self._put_role(txn, name, ())

    def role_delete(self, txn, name: str) -> None:
        if self.enabled(txn) and name == ROOT:
            raise InvalidAuthManagementError()
        if self.role(txn, name) is None or not txn.delete(name.encode(), db=self.roles_db):
            raise RoleEmptyError() if not name else RoleNotFoundError()
        for user in self.users(txn):  # etcd revokes the deleted role from every user
            found = self.user(txn, user)
            if name in found[1]:
                self._put_user(txn, user, found[0], tuple(r for r in found[1] if r != name), found[2])
        self._bump(txn)

    def role_grant_permission(self, txn, name: str, permission: Permission) -> None:
        permissions = self.role(txn, name)
        if permissions is None:
            raise RoleNotFoundError()
        kept = [p for p in permissions if (p.key, p.range_end) != (permission.key, permission.range_end)]
        self._put_role(txn, name, kept + [permission])  # etcd: a grant on the same range replaces its type

    def role_revoke_permission(self, txn, name: str, key: bytes, range_end: bytes) -> None:
        permissions = self.role(txn, name)
        if permissions is None:
            raise RoleNotFoundError()
        kept = [p for p in permissions if (p.key, p.range_end) != (key, range_end)]
        if len(kept) == len(permissions):
            raise PermissionNotGrantedError()
        self._put_role(txn, name, kept)

    def existing_role(self, txn, name: str) -> tuple[Permission, ...]:
        return _existing(self.role, txn, name, RoleEmptyError, RoleNotFoundError)

    def existing_user(self, txn, name: str):
        return _existing(self.user, txn, name, UserEmptyError, UserNotFoundError)

    def require_enabled(self, txn) -> None:
        if not self.enabled(txn):
            raise AuthNotEnabledError()


def _existing(read, txn, name: str, empty_error, missing_error):
    """read(txn, name), with etcd's errors for an empty name and a missing record."""
    if not name:
        raise empty_error()
    found = read(txn, name)
    if found is None:
        raise missing_error()
    return found


def _check_length(name: str) -> None:
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidArgumentError(f"cairn: a user or role name is at most {MAX_NAME_BYTES} bytes")
