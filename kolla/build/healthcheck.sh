#!/bin/bash
# kpc's stand-in for MariaDB's docker healthcheck.sh (which kolla fetches from GitHub): the
# options kolla-ansible's healthcheck_mariadb and mariadb role use.
#   healthcheck.sh [--defaults-file FILE] [--connect] [--innodb_initialized]
#                  [--galera_online] [--galera_synced] [--su-mysql]
set -u
defaults=()
checks=()
while [ $# -gt 0 ]; do
  case "$1" in
    --defaults-file=*) defaults=("--defaults-file=${1#*=}") ;;
    --defaults-file) shift; defaults=("--defaults-file=$1") ;;
    --connect|--innodb_initialized|--galera_online|--galera_synced) checks+=("${1#--}") ;;
    --su-mysql|--su=*|--datadir=*|--no-defaults) ;;
    *) echo "healthcheck.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ ${#checks[@]} -gt 0 ] || checks=(connect)
query() { mariadb "${defaults[@]}" -s -N -e "$1" 2>/dev/null; }
for check in "${checks[@]}"; do
  case "$check" in
    connect) query 'SELECT 1' >/dev/null || exit 1 ;;
    innodb_initialized) [ "$(query "SELECT 1 FROM information_schema.ENGINES WHERE engine='InnoDB' AND support IN ('YES','DEFAULT')")" = 1 ] || exit 1 ;;
    galera_online) [ "$(query "SHOW GLOBAL STATUS LIKE 'wsrep_ready'" | awk '{print $2}')" = ON ] || exit 1 ;;
    galera_synced) [ "$(query "SHOW GLOBAL STATUS LIKE 'wsrep_local_state'" | awk '{print $2}')" = 4 ] || exit 1 ;;
  esac
done
exit 0
