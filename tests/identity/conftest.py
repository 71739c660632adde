"""Fixtures for these tests. Argon2id at minimal cost: the tests log in hundreds of times (production keeps the
RFC 9106 profile; the lead may move this call into tests/conftest.py so every module's tests benefit)."""

from citybrain.identity.service import use_fast_password_hashing

use_fast_password_hashing()
