"""What comes only from the environment (or a ``.env`` file), never from config.yaml, and never
reaches logs, alerts, the API or the journal: the Bybit API keys and the alert URLs."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Secrets(BaseSettings):
    """API credentials, read only from the environment or a ``.env`` file."""

    model_config = SettingsConfigDict(env_file=".env", env_prefix="BYBIT_", extra="ignore")

    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None


class AlertSecrets(BaseSettings):
    """Apprise notification URLs (comma- or space-separated), only from ``BOT_ALERT_URLS`` or ``.env``."""

    model_config = SettingsConfigDict(env_file=".env", env_prefix="BOT_", extra="ignore")

    alert_urls: SecretStr | None = None
