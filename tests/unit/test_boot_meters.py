"""The meters in the boot file (`up --restore` at boot, by the systemd unit): this version's
"meters", an older version's "storm" list, and a later version's meters this one does not know,
which are left out with a notice: refusing them failed the unit's restore for good (review
finding)."""

from dataplane.agent import control


def test_meters_of_this_version_and_of_older_ones():
    assert control.boot_meters({"meters": {"storm_rate": 5, "learn_rate": 7}}) == {"storm_rate": 5, "learn_rate": 7}
    assert control.boot_meters({"storm": [50, 100]}) == {"storm_rate": 50, "storm_burst": 100}
    assert control.boot_meters({"storm": [50, 100, 400]}) == {"storm_rate": 50, "storm_burst": 100,
                                                              "overlay_storm_rate": 400}
    assert control.boot_meters({}) == {}


def test_meters_a_later_version_wrote_are_left_out_with_a_notice(capsys):
    got = control.boot_meters({"meters": {"storm_rate": 5, "flux_rate": 9}})
    assert got == {"storm_rate": 5}
    assert "flux_rate" in capsys.readouterr().err
