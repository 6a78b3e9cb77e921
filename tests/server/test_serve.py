"""`medvl serve`: the command line it runs and the settings it checks before starting."""

import argparse

import pytest

from medvl.server import APP_DIR, ASGI_APP, add_arguments, build_command, serve, server_env
from medvl.server.settings import ConfigError, ServerSettings


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_command_is_the_stock_server_with_our_app_and_handlers():
    argv = build_command("/data/studies", port=8123, conf=[("cache_mb", "512"), ("labels", "liver,spleen")],
                         python="py")
    assert argv[:4] == ["py", "-m", "monailabel.main", "start_server"]
    assert argv[argv.index("--app") + 1] == str(APP_DIR) and (APP_DIR / "main.py").is_file()
    assert argv[argv.index("--studies") + 1] == "/data/studies"
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--uvicorn_app") + 1] == ASGI_APP
    assert argv[-6:] == ["--conf", "cache_mb", "512", "--conf", "labels", "liver,spleen"]


def test_flags_default_to_loopback_and_sample_data():
    args = parse("--conf", "cache_mb", "100", "--port", "9000")
    assert (args.host, args.port, args.conf) == ("127.0.0.1", 9000, [["cache_mb", "100"]])
    assert args.studies.endswith("sample_data")


def test_server_env_puts_this_checkout_first():
    env = server_env({"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(":")[0].endswith("lib") and env["PYTHONPATH"].endswith("/x")


def test_settings_are_typed_once_and_unknown_keys_left_to_monailabel():
    s = ServerSettings.from_conf({"cache_mb": "512", "labels": "liver, spleen", "session_ttl_s": "60",
                                  "default_axis": "j", "server_mode": "true"})
    assert (s.cache_bytes, s.labels, s.session_ttl_s, s.default_axis) == (512 * 2**20, ("liver", "spleen"), 60.0, "j")


@pytest.mark.parametrize("conf, words", [
    ({"cache_mb": "lots"}, "expected int"),
    ({"cache_mb": "0"}, "cache_mb must be > 0"),
    ({"default_axis": "z"}, "default_axis 'z'"),
    ({"labels": ","}, "labels"),
])
def test_bad_settings_are_named(conf, words):
    with pytest.raises(ConfigError, match=None) as caught:
        ServerSettings.from_conf(conf)
    assert words in str(caught.value)


def test_serve_refuses_bad_settings_before_starting_anything():
    with pytest.raises(ConfigError, match="session_ttl_s"):
        serve(parse("--conf", "session_ttl_s", "soon"))


# ---- access flags (medvl.server.auth.access_env) -----------------------------------------------
def test_loopback_without_a_token_stays_open_and_other_hosts_get_generated_tokens():
    from medvl.server.auth import access_env

    env, lines = access_env("127.0.0.1", environ={})
    assert (env["MEDVL_TOKEN"], env["MEDVL_ADMIN_TOKEN"], lines) == ("", "", [])
    env, lines = access_env("0.0.0.0", environ={})
    token, admin = env["MEDVL_TOKEN"], env["MEDVL_ADMIN_TOKEN"]
    assert len(token) >= 32 and len(admin) >= 32 and token != admin
    assert any(token in line for line in lines) and any(admin in line for line in lines)
    env, lines = access_env("192.168.1.5", token="given", read_only=True, cors=["http://a.example/"],
                            environ={"MEDVL_ADMIN_TOKEN": "from-env"})
    assert (env["MEDVL_TOKEN"], env["MEDVL_ADMIN_TOKEN"], env["MEDVL_READ_ONLY"], env["MEDVL_CORS_ORIGINS"]) == (
        "given", "from-env", "1", "http://a.example")
    assert not any("given" in line for line in lines)  # only generated tokens are printed


@pytest.mark.parametrize("kwargs, environ, words", [
    ({"token": "same", "admin_token": "same"}, {}, "the same"),
    ({"token": "t"}, {"MONAI_LABEL_AUTH_ENABLE": "true"}, "Keycloak"),
])
def test_conflicting_access_flags_are_refused(kwargs, environ, words):
    from medvl.server.auth import access_env

    with pytest.raises(ConfigError, match=words):
        access_env("0.0.0.0", environ=environ, **kwargs)


def test_serve_has_the_access_flags():
    args = parse("--host", "0.0.0.0", "--token", "t", "--read-only", "--cors-origin", "http://a", "--cors-origin",
                 "http://b")
    assert (args.token, args.admin_token, args.read_only, args.cors_origin) == ("t", "", True, ["http://a", "http://b"])
