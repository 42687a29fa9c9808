from appliance.cli.main import run

run()
