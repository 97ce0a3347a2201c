"""compose_clone: the next container Compose would number, copied from the one it made (pure).

The template is shaped like the inspect data of a container Compose 2.40 made by ``up --no-start
--scale`` (two networks, its own name as an alias on each, a named and an anonymous volume); the
engine tests check the real thing (tests/engine/test_fast_requests.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from rollover.backends.docker.compose_clone import compose_number, copy_of_template, numbered_name

ANON_OLD = "a" * 64


def template() -> dict[str, Any]:
    return {
        "Id": "0123456789ab" + "c" * 52,
        "Name": "/shop-web-25",
        "Config": {
            "Image": "shop/web:v2",
            "Hostname": "0123456789ab",
            "Env": ["REGION=eu-1"],
            "Labels": {"com.docker.compose.container-number": "25", "com.docker.compose.config-hash": "f00",
                       "team": "checkout"},
            "Volumes": None,
        },
        "HostConfig": {
            "NetworkMode": "shop_default",
            "Binds": ["shop_shared:/shared:rw"],
            "Mounts": [{"Type": "volume", "Target": "/data", "VolumeOptions": {}}],
        },
        "Mounts": [{"Type": "volume", "Name": "b" * 64, "Destination": "/data", "RW": True}],
        "NetworkSettings": {"Networks": {
            "shop_default": {"Aliases": ["shop-web-25", "web"]},
            "shop_front": {"Aliases": ["shop-web-25", "web", "shop-web", "0123456789ab"]},
        }},
    }


@pytest.mark.parametrize(("name", "number", "expected"), [
    pytest.param("/shop-web-25", 26, "shop-web-26", id="next"),
    pytest.param("/my-shop-api-v2-3", 10, "my-shop-api-v2-10", id="dashes-in-project-and-service"),
])
def test_numbered_name_keeps_composes_stem(name: str, number: int, expected: str) -> None:
    assert numbered_name({"Name": name}, number) == expected


def test_compose_number_reads_the_label() -> None:
    assert compose_number(template()) == 25
    assert compose_number({"Config": {"Labels": {}}}) == 0


def test_a_copy_differs_from_the_template_in_number_name_aliases_and_taken_over_volumes() -> None:
    predecessor = {"Mounts": [{"Type": "volume", "Name": ANON_OLD, "Destination": "/data", "RW": True}]}
    request, name = copy_of_template(template(), 26, volumes_from=predecessor)
    body = request.body
    assert name == "shop-web-26"
    assert body["Labels"] == {"com.docker.compose.container-number": "26", "com.docker.compose.config-hash": "f00",
                              "team": "checkout"}
    assert body["Image"] == "shop/web:v2" and body["Env"] == ["REGION=eu-1"]
    assert "Hostname" not in body  # the engine names the copy's host after its own id
    assert body["NetworkingConfig"]["EndpointsConfig"] == {"shop_default": {"Aliases": ["shop-web-26", "web"]}}
    assert request.extra_networks == (("shop_front", {"Aliases": ["shop-web-26", "web", "shop-web"]}),)
    assert body["HostConfig"]["Binds"] == ["shop_shared:/shared:rw"]
    assert body["HostConfig"]["Mounts"] == [{"Type": "volume", "Source": ANON_OLD, "Target": "/data",
                                             "ReadOnly": False}]
    assert request.inherited_volumes == ("/data",)


def test_a_copy_without_a_predecessor_gets_fresh_anonymous_volumes() -> None:
    request, _ = copy_of_template(template(), 27, volumes_from=None)
    assert request.body["HostConfig"]["Mounts"] == [{"Type": "volume", "Target": "/data", "VolumeOptions": {}}]
    assert request.inherited_volumes == ()


def test_the_template_is_left_as_it_was() -> None:
    original = template()
    copy_of_template(original, 26, volumes_from=None)
    assert original == template()
