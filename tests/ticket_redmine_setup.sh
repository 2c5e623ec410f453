#!/bin/sh
# Starts a throwaway Redmine 5.0.4 (Debian bookworm packages) on 127.0.0.1 for
# tests/ticket_redmine_real.rs, and prints the environment the test reads:
#
#   eval "$(sudo tests/ticket_redmine_setup.sh start)"
#   cargo test --test ticket_redmine_real
#   sudo tests/ticket_redmine_setup.sh stop
#
# Installing takes about 40 s here (apt, packages not cached), setting up and starting about 10 s.
# Needs root (apt, /usr/share/redmine). The SQLite database is the package's default instance.
set -eu
PORT=${PLURA_TEST_REDMINE_PORT:-3817}
DIR=${PLURA_TEST_REDMINE_DIR:-/tmp/plura-redmine}
mkdir -p "$DIR"
case "${1:-start}" in
start)
    if ! [ -d /usr/share/redmine ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q redmine redmine-sqlite thin >"$DIR/apt.log" 2>&1
    fi
    cat >"$DIR/setup.rb" <<'RUBY'
Setting.rest_api_enabled = '1'
u = User.find_by_login('admin')
u.must_change_passwd = false
u.save!
Project.find_by_identifier('secops') || Project.create!(name: 'Secops', identifier: 'secops', is_public: false,
  tracker_ids: Tracker.pluck(:id), enabled_module_names: ['issue_tracking'])
puts "KEY=#{u.api_key}"
RUBY
    cd /usr/share/redmine
    KEY=$(RAILS_ENV=production X_DEBIAN_SITEID=default ruby bin/rails runner "$DIR/setup.rb" | sed -n 's/^KEY=//p')
    if ! [ -f "$DIR/thin.pid" ]; then
        X_DEBIAN_SITEID=default RAILS_ENV=production thin start -a 127.0.0.1 -p "$PORT" -e production -d \
            --pid "$DIR/thin.pid" --log "$DIR/thin.log" >/dev/null
    fi
    i=0
    until curl -fs -o /dev/null -H "X-Redmine-API-Key: $KEY" "http://127.0.0.1:$PORT/users/current.json"; do
        i=$((i + 1)); [ "$i" -lt 60 ] || { echo "redmine did not start; see $DIR/thin.log" >&2; exit 1; }
        sleep 1
    done
    echo "export PLURA_TEST_REDMINE_URL=http://127.0.0.1:$PORT"
    echo "export PLURA_TEST_REDMINE_KEY=$KEY"
    echo "export PLURA_TEST_REDMINE_PROJECT=secops"
    ;;
stop)
    if [ -f "$DIR/thin.pid" ]; then
        kill "$(cat "$DIR/thin.pid")" 2>/dev/null || true
        rm -f "$DIR/thin.pid"
    fi
    ;;
esac
