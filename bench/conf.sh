# Config writers for bench/run.sh (sourced by it, not run on its own): each writes one
# config file under $TMP from the settings run.sh has set (TMP, NOFILE, CONNS, PROXY_PORT,
# BACKEND1, BACKEND2).

# shellcheck shell=bash

write_backend_conf() { # PORT
	local port=$1 dir=$TMP/backend-$1
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((CONNS + 1000)); }
http {
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 600s;
    keepalive_requests 10000000;
    client_header_timeout 600s;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $TMP/www;
        location = / { return 200 "ok"; }
        location = /big.bin { }
    }
}
EOF
}

write_lbctl_conf() { # NAME WORKERS
	local dir=$TMP/$1
	mkdir -p "$dir"
	cat >"$dir/lbctl.toml" <<EOF
[master]
workers = $2
pid_file = "$dir/lbctl.pid"
control_socket = "$dir/lbctl.sock"
log_file = "$dir/lbctl.log"
drain_timeout = "5s"

[[listen]]
name = "bench"
bind = "127.0.0.1:$PROXY_PORT"
mode = "tcp"
balance = "round_robin"
servers = [ { addr = "127.0.0.1:$BACKEND1" }, { addr = "127.0.0.1:$BACKEND2" } ]
EOF
}

write_haproxy_conf() {
	mkdir -p "$TMP/haproxy"
	cat >"$TMP/haproxy/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $((CONNS + 1000))
    ulimit-n $NOFILE

defaults
    mode tcp
    maxconn $((CONNS + 1000))
    timeout connect 3s
    timeout client 10m
    timeout server 10m

listen bench
    bind 127.0.0.1:$PROXY_PORT
    balance roundrobin
    server b1 127.0.0.1:$BACKEND1
    server b2 127.0.0.1:$BACKEND2
EOF
}

write_nginx_stream_conf() {
	local dir=$TMP/nginx-stream
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((2 * CONNS + 1000)); }
stream {
    upstream backends {
        server 127.0.0.1:$BACKEND1;
        server 127.0.0.1:$BACKEND2;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        proxy_pass backends;
        proxy_connect_timeout 3s;
        proxy_timeout 10m;
    }
}
EOF
}
