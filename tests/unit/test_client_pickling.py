"""A client pickles and deep-copies as its settings alone (the token included): no channel, lock,
credentials or caches travel; the copy is a new client that opens its own channel on first use."""

from __future__ import annotations

import asyncio
import copy
import pickle

import pytest

from lossd.client import AsyncClient, Client


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_a_client_pickles_as_its_config(cls: type) -> None:
    client = cls("127.0.0.1:1", token="s3cret-0123456789abcdef", timeout=7, compression="gzip")
    if cls is Client:
        assert client.channel is not None  # opened: a grpc channel and a lock that cannot be pickled
    data = pickle.dumps(client)
    assert b"s3cret-0123456789abcdef" in data  # documented: the token travels with the settings
    for again in (pickle.loads(data), copy.deepcopy(client), copy.copy(client)):
        assert type(again) is cls and again is not client
        assert again.config == client.config
        assert again._channel is None and again._callables == {} and again._opening is not client._opening
    if cls is Client:
        client.close()
    else:
        asyncio.run(client.close())


def test_a_copy_of_a_closed_client_is_open() -> None:
    client = Client("127.0.0.1:1")
    client.close()
    again = copy.deepcopy(client)
    assert again.channel is not None
    again.close()


def test_an_unpickled_client_reads_its_tls_files_when_it_opens(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate, but readable PEM\n-----END CERTIFICATE-----\n")
    data = pickle.dumps(Client("127.0.0.1:1", ca_file=str(ca)))
    ca.unlink()
    client = pickle.loads(data)  # loading needs no file: a model holding it loads anywhere
    with pytest.raises(ValueError, match="ca_file"):
        client.channel  # noqa: B018
