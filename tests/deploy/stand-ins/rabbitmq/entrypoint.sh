#!/bin/sh
# As the official image: the user RABBITMQ_DEFAULT_USER with RABBITMQ_DEFAULT_PASS, reachable from the network.
set -eu
cat > /etc/rabbitmq/rabbitmq.conf <<CONF
default_user = $RABBITMQ_DEFAULT_USER
default_pass = $RABBITMQ_DEFAULT_PASS
loopback_users = none
CONF
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
exec rabbitmq-server
