"""Placeholder router; its area fills it in."""

from fastapi import APIRouter

router = APIRouter()
