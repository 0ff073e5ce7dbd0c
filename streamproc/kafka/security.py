"""How clients reach the local Kafka's CLIENT listener: plaintext, TLS (mutual or not) and/or SASL (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512), as broker properties and the SCRAM users created when storage is formatted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class ClientSecurity:
    """How clients reach the brokers: `protocol` as Kafka names it; for TLS a certificate and key (PEM,
    the key unencrypted) and optionally a CA that client certificates must chain to (mutual TLS); for SASL
    the users (name -> password), who may log in with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."""

    protocol: str = "PLAINTEXT"
    certificate: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None
    users: Mapping[str, str] = field(default_factory=dict)
    mechanisms: tuple[str, ...] = SASL_MECHANISMS  # the SASL mechanisms the listener offers

    def __post_init__(self) -> None:
        if self.protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError(f"unknown security protocol {self.protocol}")
        if self.protocol.endswith("SSL") and not (self.certificate and self.key):
            raise ValueError(f"{self.protocol} needs the brokers' certificate and key")
        if self.protocol.startswith("SASL") and not self.users:
            raise ValueError(f"{self.protocol} needs at least one user")
        if unknown := set(self.mechanisms) - set(SASL_MECHANISMS):
            raise ValueError(f"unknown SASL mechanisms {sorted(unknown)}")

    def listener_properties(self, folder: Path) -> dict[str, str]:
        """The CLIENT listener's broker properties; writes the PEM key store they name into `folder`."""
        props: dict[str, str] = {}
        prefix = "listener.name.client."
        if self.protocol.endswith("SSL"):
            assert self.certificate and self.key
            store = folder / "client-listener-keystore.pem"  # PEM key store: the private key, then the chain
            store.write_text(self.key.read_text() + "\n" + self.certificate.read_text())
            props |= {f"{prefix}ssl.keystore.type": "PEM", f"{prefix}ssl.keystore.location": str(store)}
            if self.client_ca:
                props |= {
                    f"{prefix}ssl.truststore.type": "PEM",
                    f"{prefix}ssl.truststore.location": str(self.client_ca),
                    f"{prefix}ssl.client.auth": "required",
                }
        if self.protocol.startswith("SASL"):
            props[f"{prefix}sasl.enabled.mechanisms"] = ",".join(self.mechanisms)
            if "PLAIN" in self.mechanisms:
                plain_users = " ".join(f'user_{name}="{password}"' for name, password in self.users.items())
                props[f"{prefix}plain.sasl.jaas.config"] = (
                    f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
                )
            for mechanism in self.mechanisms:
                if mechanism.startswith("SCRAM"):
                    props[f"{prefix}{mechanism.lower()}.sasl.jaas.config"] = (
                        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                    )
        return props

    def scram_format_args(self) -> list[str]:
        """StorageTool arguments that create every user's SCRAM credentials when the storage is formatted."""
        if not self.protocol.startswith("SASL"):
            return []
        return [
            arg
            for name, password in self.users.items()
            for mechanism in SASL_MECHANISMS[1:]
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]
