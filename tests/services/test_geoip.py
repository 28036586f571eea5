"""GeoIP: a real MaxMind-format file written here with mmdb-writer and read by maxminddb, the
bundled iptocc table, and the addresses that never have a country."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.services.geoip import BundledDatabase, GeoIp, MaxMindDatabase, countable
from tests.factories import write_country_mmdb

write_mmdb = write_country_mmdb


PUBLIC = {
    "81.2.69.0/24": "GB",
    "89.160.20.0/24": "SE",
    "2a02:cf40::/32": "NO",
    # Special-use ranges mapped on purpose: they must never count all the same.
    "192.0.2.0/24": "FR",
    "10.0.0.0/8": "DE",
    "2001:db8::/32": "FR",
}


class TestCountable:
    """Only globally routable unicast addresses can have a country."""

    @pytest.mark.parametrize(
        "ip",
        [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.10.10",
            "100.64.0.1",
            "0.1.2.3",
            "192.0.0.8",
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.251",
            "239.1.2.3",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "2002:c000:0204::1",
            "3fff::1",
            "::ffff:10.0.0.1",
            "64:ff9b:1::1",
            "not an address",
            "",
            None,
        ],
    )
    def test_not_countable(self, ip: str | None) -> None:
        assert countable(ip) is None

    @pytest.mark.parametrize(
        ("ip", "canonical"),
        [
            ("81.2.69.142", "81.2.69.142"),
            ("8.8.8.8", "8.8.8.8"),
            ("::ffff:81.2.69.142", "81.2.69.142"),
            ("2A02:CF40::1", "2a02:cf40::1"),
        ],
    )
    def test_countable(self, ip: str, canonical: str) -> None:
        assert countable(ip) == canonical


class TestMaxMind:
    """An operator's MaxMind-format file, read by the real reader."""

    def test_countries_from_the_file(self, tmp_path: Path) -> None:
        geoip = GeoIp(write_mmdb(tmp_path / "country.mmdb", PUBLIC))
        verdict = geoip.lookup("81.2.69.142")
        assert verdict.country == "GB"
        assert verdict.source.startswith("GeoLite2-Country ")
        assert geoip.lookup("::ffff:89.160.20.112").country == "SE"
        assert geoip.lookup("2a02:cf40::17").country == "NO"
        assert geoip.lookup("8.8.8.8").country is None  # not in this file: unknown
        assert geoip.built_at is not None

    def test_special_use_addresses_never_count_even_when_mapped(self, tmp_path: Path) -> None:
        geoip = GeoIp(write_mmdb(tmp_path / "country.mmdb", PUBLIC))
        for ip in ("192.0.2.1", "10.1.1.1", "2001:db8::5"):
            assert geoip.lookup(ip).country is None
            # ...although the file itself does map them:
        assert MaxMindDatabase(tmp_path / "country.mmdb").country("192.0.2.1") == "FR"

    def test_registered_country_when_there_is_no_country(self, tmp_path: Path) -> None:
        path = write_mmdb(tmp_path / "c.mmdb", {"81.2.69.0/24": "GB"}, key="registered_country")
        assert GeoIp(path).lookup("81.2.69.1").country == "GB"

    def test_a_database_swapped_on_disk_is_picked_up(self, tmp_path: Path) -> None:
        path = write_mmdb(tmp_path / "country.mmdb", {"81.2.69.0/24": "GB"})
        geoip = GeoIp(path)
        assert geoip.lookup("81.2.69.142").country == "GB"
        write_mmdb(path, {"81.2.69.0/24": "IE"}, database_type="DBIP-Country-Lite")
        verdict = geoip.lookup("81.2.69.142")
        assert (verdict.country, verdict.source.split()[0]) == ("IE", "DBIP-Country-Lite")

    def test_unreadable_file_falls_back_to_the_bundled_table(self, tmp_path: Path) -> None:
        path = tmp_path / "missing.mmdb"
        geoip = GeoIp(path)
        verdict = geoip.lookup("8.8.8.8")
        assert verdict.source.startswith("iptocc ")
        assert verdict.country == "US"
        path.write_bytes(b"not a maxmind database")
        assert geoip.lookup("8.8.8.8").source.startswith("iptocc ")
        write_mmdb(path, {"8.8.8.0/24": "CA"})
        assert geoip.lookup("8.8.8.8").country == "CA"  # a good file is used again

    def test_reconfigure_to_another_file_or_none(self, tmp_path: Path) -> None:
        first = write_mmdb(tmp_path / "a.mmdb", {"81.2.69.0/24": "GB"})
        second = write_mmdb(tmp_path / "b.mmdb", {"81.2.69.0/24": "IE"})
        geoip = GeoIp(first)
        assert geoip.lookup("81.2.69.1").country == "GB"
        geoip.configure(second)
        assert geoip.lookup("81.2.69.1").country == "IE"
        geoip.configure(None)
        assert geoip.lookup("81.2.69.1").source.startswith("iptocc ")


class TestBundled:
    """The offline default knows where well-known public blocks are registered."""

    @pytest.mark.parametrize(
        ("ip", "country"),
        [
            ("8.8.8.8", "US"),  # Google Public DNS (ARIN)
            ("193.0.6.139", "NL"),  # RIPE NCC, Amsterdam
            ("202.12.29.205", "AU"),  # APNIC, Brisbane
            ("200.3.14.10", "UY"),  # LACNIC, Montevideo
            ("196.216.2.1", "ZA"),  # AFRINIC (registered in South Africa)
            ("2001:4860:4860::8888", "US"),
        ],
    )
    def test_well_known_addresses(self, ip: str, country: str) -> None:
        assert GeoIp(None).lookup(ip).country == country

    def test_names_itself_and_refuses_special_use(self) -> None:
        verdict = GeoIp(None).lookup("192.0.2.1")
        assert verdict.country is None
        assert verdict.source == BundledDatabase().source
        assert verdict.source.startswith("iptocc 3.")
