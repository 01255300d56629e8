#!/usr/bin/env bash
#  Black-box test of tollgate-mock-upstream: starts it on port 0 and checks every behaviour
#  other tests rely on with curl and jq. Usage: mock_upstream_test.sh PATH/TO/tollgate-mock-upstream
#  Exit 0 = pass, 1 = fail, 77 = skipped (curl or jq missing).
set -u

BIN=${1:?usage: $0 tollgate-mock-upstream}
for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed"; exit 77; }
done

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

FAILS=0
CHECKS=0
check() { #  check NAME COMMAND...: passes if COMMAND succeeds
    local name=$1
    shift
    CHECKS=$((CHECKS + 1))
    if "$@"; then
        [ -n "${VERBOSE:-}" ] && echo "ok   $name"
    else
        echo "FAIL $name"
        FAILS=$((FAILS + 1))
    fi
    return 0
}
eq() { [ "$1" = "$2" ] || { echo "     expected [$2] got [$1]" >&2; return 1; }; }
ge() { [ "$1" -ge "$2" ] 2>/dev/null || { echo "     expected >= $2, got [$1]" >&2; return 1; }; }

#  start NAME ARGS...: runs the mock, waits for its "port=" line, sets URL_<NAME>
start() {
    local name=$1
    shift
    "$BIN" --port 0 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    PIDS+=($!)
    local port=""
    for _ in $(seq 1 100); do
        port=$(sed -n '1s/^port=\([0-9][0-9]*\)$/\1/p' "$TMP/$name.out")
        [ -n "$port" ] && break
        sleep 0.05
    done
    [ -n "$port" ] || { echo "FAIL: $name did not print port="; cat "$TMP/$name.err"; exit 1; }
    printf -v "URL_$name" 'http://127.0.0.1:%s' "$port"
}

#  waitfor JQ_EXPR: polls /mock/stats until the expression is true (at most ~3 s)
waitfor() {
    for _ in $(seq 1 60); do
        [ "$(curl -s "$U/mock/stats" | jq -r "$1")" = true ] && return 0
        sleep 0.05
    done
    echo "     timed out waiting for $1: $(curl -s "$U/mock/stats" | jq -c "{client_aborts,open_streams}")" >&2
    return 1
}

start main --fault 'static-down=503' --fault 'flappy=flap:3' --models 'gpt-x,claude-y,gemini-z'
start keyed --require-key s3cret
U=$URL_main
K=$URL_keyed

post() { curl -s "$U$1" -H 'content-type: application/json' "${@:3}" -d "$2"; }
sse_data() { sed -n 's/^data: //p' | tr -d '\r'; } #  SSE data payloads, one per line

USER_HI='"messages":[{"role":"user","content":"hi"}]'
TOOLS_OAI='"tools":[{"type":"function","function":{"name":"get_weather","parameters":{}}}]'

# ---------------------------------------------------------------- OpenAI Chat Completions
BODY='{"model":"gpt-x",'$USER_HI'}'
R=$(post /v1/chat/completions "$BODY")
check "chat text" eq "$(jq -r '.choices[0].message.content' <<<"$R")" "Hello from mock upstream model"
check "chat finish" eq "$(jq -r '.choices[0].finish_reason' <<<"$R")" "stop"
check "chat usage" eq "$(jq -c '.usage|[.prompt_tokens,.completion_tokens,.total_tokens,.prompt_tokens_details.cached_tokens]' <<<"$R")" \
    "[$(((${#BODY} + 3) / 4)),5,$(((${#BODY} + 3) / 4 + 5)),0]"

R=$(post /v1/chat/completions '{"model":"mock-7","stream":true,"stream_options":{"include_usage":true},'"$USER_HI"'}' -N | sse_data)
check "chat stream deltas" eq "$(grep -v DONE <<<"$R" | jq -r '.choices[0].delta.content // empty' | grep -c .)" 7
check "chat stream text" eq "$(grep -v DONE <<<"$R" | jq -j '.choices[0].delta.content // empty')" "Hello from mock upstream model Hello from"
check "chat stream done" eq "$(tail -1 <<<"$R")" "[DONE]"
check "chat stream usage chunk" eq "$(tail -2 <<<"$R" | head -1 | jq -c '[(.choices|length),.usage.completion_tokens]')" "[0,7]"
check "chat stream usage null" eq "$(head -1 <<<"$R" | jq -c '.usage')" "null"

R=$(post /v1/chat/completions '{"model":"m","stream":true}' -N -H 'x-mock-chunks: 3' | sse_data)
check "chat x-mock-chunks" eq "$(grep -v DONE <<<"$R" | jq -r '.choices[0].delta.content // empty' | grep -c .)" 3
check "chat no usage without include_usage" eq "$(grep -v DONE <<<"$R" | jq -s 'map(has("usage"))|any')" false

R=$(post /v1/chat/completions '{"model":"m","stream":true,'"$TOOLS_OAI"',"messages":[{"role":"user","content":"please call_tool now"}]}' -N | sse_data | grep -v DONE)
check "chat tool stream pieces" ge "$(jq -r '.choices[0].delta.tool_calls[0].function.arguments // empty' <<<"$R" | grep -c .)" 2
check "chat tool stream args" eq "$(jq -j '.choices[0].delta.tool_calls[0].function.arguments // empty' <<<"$R")" '{"location":"Paris"}'
check "chat tool stream index" eq "$(jq -s '[.[].choices[0].delta.tool_calls // empty | .[0] | has("index")] | all' <<<"$R")" true
check "chat tool stream name" eq "$(head -1 <<<"$R" | jq -r '.choices[0].delta.tool_calls[0].function.name')" get_weather
check "chat tool finish" eq "$(jq -r '.choices[0].finish_reason // empty' <<<"$R")" tool_calls
R=$(post /v1/chat/completions '{"model":"m",'"$TOOLS_OAI"',"messages":[{"role":"user","content":"call_tool"}]}')
check "chat tool call" eq "$(jq -c '[.choices[0].finish_reason,.choices[0].message.tool_calls[0].function]' <<<"$R")" \
    '["tool_calls",{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}]'
R=$(post /v1/chat/completions '{"model":"m",'"$TOOLS_OAI"',"messages":[{"role":"user","content":"call_tool"},{"role":"assistant","tool_calls":[]},{"role":"tool","content":"sunny"}]}')
check "chat tool result ends loop" eq "$(jq -r '.choices[0].finish_reason' <<<"$R")" stop

R=$(post /v1/chat/completions '{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"echo:ping  pong"}]}]}')
check "chat echo" eq "$(jq -r '.choices[0].message.content' <<<"$R")" "ping  pong"
R=$(post /v1/chat/completions '{"model":"m","stream":true,"messages":[{"role":"user","content":"echo:a b c"}]}' -N | sse_data | grep -v DONE)
check "chat echo stream" eq "$(jq -j '.choices[0].delta.content // empty' <<<"$R")" "a b c"
R=$(post /v1/chat/completions "$BODY" -H 'x-mock-cached-tokens: 3')
check "chat cached tokens" eq "$(jq '.usage.prompt_tokens_details.cached_tokens' <<<"$R")" 3

# ---------------------------------------------------------------- OpenAI Responses
R=$(post /v1/responses '{"model":"mock-3","input":"hi"}')
check "responses text" eq "$(jq -r '.output[0].content[0].text' <<<"$R")" "Hello from mock"
check "responses usage" eq "$(jq -c '.usage|[.output_tokens,.input_tokens_details.cached_tokens,(.total_tokens-.input_tokens)]' <<<"$R")" "[3,0,3]"
R=$(post /v1/responses '{"model":"mock-2","stream":true,"input":[{"role":"user","content":"hi"}]}' -N)
check "responses events" eq "$(sed -n 's/^event: //p' <<<"$R" | tr '\n' ' ')" \
    "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta response.output_text.delta response.output_text.done response.content_part.done response.output_item.done response.completed "
D=$(sse_data <<<"$R")
check "responses seq" eq "$(jq -s -c 'map(.sequence_number)' <<<"$D")" "[0,1,2,3,4,5,6,7,8,9]"
check "responses deltas" eq "$(jq -j 'select(.type=="response.output_text.delta").delta' <<<"$D")" "Hello from"
check "responses completed usage" eq "$(tail -1 <<<"$D" | jq -c '.response.usage|[.output_tokens,.input_tokens_details.cached_tokens]')" "[2,0]"
R=$(post /v1/responses '{"model":"m","stream":true,"tools":[{"type":"function","name":"lookup"}],"input":[{"role":"user","content":[{"type":"input_text","text":"call_tool"}]}]}' -N | sse_data)
check "responses tool args" eq "$(jq -j 'select(.type=="response.function_call_arguments.delta").delta' <<<"$R")" '{"location":"Paris"}'
check "responses tool item" eq "$(tail -1 <<<"$R" | jq -c '.response.output[0]|[.type,.name,.arguments]')" '["function_call","lookup","{\"location\":\"Paris\"}"]'

# ---------------------------------------------------------------- OpenAI Embeddings
R=$(post /v1/embeddings '{"model":"emb","input":["a","b"],"dimensions":4}')
check "embeddings shape" eq "$(jq -c '[(.data|length),(.data[0].embedding|length),.data[1].index,(.usage.prompt_tokens>0)]' <<<"$R")" "[2,4,1,true]"
R2=$(post /v1/embeddings '{"model":"emb","input":["a","b"],"dimensions":4}')
check "embeddings deterministic" eq "$R" "$R2"
R=$(post /v1/embeddings '{"model":"emb","input":"a","encoding_format":"base64"}')
check "embeddings base64" eq "$(jq -r '.data[0].embedding' <<<"$R" | base64 -d | wc -c | tr -d ' ')" 32

# ---------------------------------------------------------------- Anthropic Messages
R=$(post /v1/messages '{"model":"claude-y","max_tokens":64,'"$USER_HI"'}' -H 'anthropic-version: 2023-06-01')
check "anthropic text" eq "$(jq -c '[.type,.role,.content[0].text,.stop_reason,.usage.output_tokens]' <<<"$R")" \
    '["message","assistant","Hello from mock upstream model","end_turn",5]'
R=$(post /v1/messages '{"model":"mock-3","max_tokens":64,"stream":true,'"$USER_HI"'}' -N)
check "anthropic events" eq "$(sed -n 's/^event: //p' <<<"$R" | tr '\n' ' ')" \
    "message_start content_block_start ping content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop "
D=$(sse_data <<<"$R")
check "anthropic start usage" eq "$(head -1 <<<"$D" | jq '.message.usage.input_tokens > 0')" true
check "anthropic deltas" eq "$(jq -j 'select(.type=="content_block_delta").delta.text' <<<"$D")" "Hello from mock"
check "anthropic message_delta" eq "$(jq -c 'select(.type=="message_delta")|[.delta.stop_reason,.usage.output_tokens]' <<<"$D")" '["end_turn",3]'
R=$(post /v1/messages '{"model":"m","max_tokens":64,"stream":true,"tools":[{"name":"get_weather","input_schema":{"type":"object"}}],"messages":[{"role":"user","content":"call_tool"}]}' -N | sse_data)
check "anthropic tool block" eq "$(jq -c 'select(.type=="content_block_start").content_block|[.type,.name]' <<<"$R")" '["tool_use","get_weather"]'
check "anthropic tool json" eq "$(jq -j 'select(.type=="content_block_delta").delta|select(.type=="input_json_delta").partial_json' <<<"$R")" '{"location":"Paris"}'
check "anthropic tool pieces" ge "$(jq -c 'select(.type=="content_block_delta")' <<<"$R" | grep -c .)" 2
check "anthropic tool stop" eq "$(jq -r 'select(.type=="message_delta").delta.stop_reason' <<<"$R")" tool_use
R=$(post /v1/messages '{"model":"m","max_tokens":64,"tools":[{"name":"get_weather","input_schema":{}}],"messages":[{"role":"user","content":"call_tool"},{"role":"assistant","content":[]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"x","content":"sunny"}]}]}')
check "anthropic tool result ends loop" eq "$(jq -r '.stop_reason' <<<"$R")" end_turn
R=$(post /v1/messages/count_tokens '{"model":"m",'"$USER_HI"'}')
check "anthropic count_tokens" eq "$(jq '.input_tokens > 0' <<<"$R")" true
R=$(post /v1/messages '{"model":"m","max_tokens":5,'"$USER_HI"'}' -H 'x-mock-cached-tokens: 2')
check "anthropic cache read" eq "$(jq '.usage.cache_read_input_tokens' <<<"$R")" 2

# ---------------------------------------------------------------- Gemini
GEM='{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}'
R=$(post /v1beta/models/gemini-z:generateContent "$GEM")
check "gemini text" eq "$(jq -c '[.candidates[0].content.parts[0].text,.candidates[0].finishReason,.usageMetadata.candidatesTokenCount,(.usageMetadata|has("cachedContentTokenCount"))]' <<<"$R")" \
    '["Hello from mock upstream model","STOP",5,true]'
R=$(post '/v1beta/models/mock-4:streamGenerateContent?alt=sse' "$GEM" -N)
check "gemini sse crlf" eq "$(grep -c $'\r$' <<<"$R")" 10
D=$(sse_data <<<"$R")
check "gemini sse text" eq "$(jq -j '.candidates[0].content.parts[0].text' <<<"$D")" "Hello from mock upstream"
check "gemini sse final" eq "$(tail -1 <<<"$D" | jq -c '[.candidates[0].finishReason,.usageMetadata.candidatesTokenCount,.usageMetadata.totalTokenCount-.usageMetadata.promptTokenCount]')" '["STOP",4,4]'
R=$(post /v1beta/models/mock-4:streamGenerateContent "$GEM" -N)
check "gemini json array" eq "$(jq -c 'length, (map(.candidates[0].content.parts[0].text)|add)' <<<"$R" | tr '\n' ' ')" '5 "Hello from mock upstream" '
R=$(post /v1beta/models/g:generateContent '{"contents":[{"parts":[{"text":"call_tool"}]}],"tools":[{"functionDeclarations":[{"name":"get_weather"}]}]}')
check "gemini function call" eq "$(jq -c '[.candidates[0].content.parts[0].functionCall,.candidates[0].finishReason]' <<<"$R")" \
    '[{"name":"get_weather","args":{"location":"Paris"}},"STOP"]'
R=$(post '/v1beta/models/g:streamGenerateContent?alt=sse' '{"contents":[{"parts":[{"text":"call_tool"}]}],"tools":[{"functionDeclarations":[{"name":"get_weather"}]}]}' | sse_data)
check "gemini stream function call" eq "$(jq -c '.candidates[0].content.parts[0].functionCall.args' <<<"$R")" '{"location":"Paris"}'
R=$(post /v1beta/models/g:countTokens "$GEM")
check "gemini countTokens" eq "$(jq '.totalTokens > 0' <<<"$R")" true

# ---------------------------------------------------------------- Model lists
check "models openai" eq "$(curl -s "$U/v1/models" | jq -c '[.object,[.data[].id],.data[0].object]')" '["list",["gpt-x","claude-y","gemini-z"],"model"]'
check "models anthropic" eq "$(curl -s "$U/v1/models" -H 'anthropic-version: 2023-06-01' | jq -c '[[.data[].type][0],.has_more,.first_id,.last_id]')" '["model",false,"gpt-x","gemini-z"]'
check "models gemini" eq "$(curl -s "$U/v1beta/models" | jq -c '[.models[].name]')" '["models/gpt-x","models/claude-y","models/gemini-z"]'

# ---------------------------------------------------------------- Errors in each protocol's shape
code() { curl -s -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' "$@"; }
for status in 401 403 404 429 500 502 503; do
    check "openai $status" eq "$(code "$U/v1/chat/completions" -H "x-mock-fault: $status" -d "$BODY")/$(jq -r '.error|(.message|length>0),.type' "$TMP/body" | tr '\n' ,)" \
        "$status/true,$(case $status in 429) echo requests ;; 5*) echo server_error ;; *) echo invalid_request_error ;; esac),"
    check "anthropic $status" eq "$(code "$U/v1/messages" -H "x-mock-fault: $status" -d "$BODY")/$(jq -r '.type,.error.type' "$TMP/body" | tr '\n' ,)" \
        "$status/error,$(case $status in 401) echo authentication_error ;; 403) echo permission_error ;; 404) echo not_found_error ;; 429) echo rate_limit_error ;; 503) echo overloaded_error ;; *) echo api_error ;; esac),"
    check "gemini $status" eq "$(code "$U/v1beta/models/g:generateContent" -H "x-mock-fault: $status" -d "$GEM")/$(jq -r '.error.code,.error.status' "$TMP/body" | tr '\n' ,)" \
        "$status/$status,$(case $status in 401) echo UNAUTHENTICATED ;; 403) echo PERMISSION_DENIED ;; 404) echo NOT_FOUND ;; 429) echo RESOURCE_EXHAUSTED ;; 500) echo INTERNAL ;; *) echo UNAVAILABLE ;; esac),"
done
code "$U/v1/chat/completions" -H 'x-mock-fault: 429' -d "$BODY" >/dev/null
check "429 retry-after default" eq "$(grep -i '^retry-after:' "$TMP/headers" | tr -d '\r' | cut -d' ' -f2)" 1
code "$U/v1/chat/completions" -H 'x-mock-fault: 429:5' -d "$BODY" >/dev/null
check "429 retry-after 5" eq "$(grep -i '^retry-after:' "$TMP/headers" | tr -d '\r' | cut -d' ' -f2)" 5
check "invalid json openai" eq "$(code "$U/v1/chat/completions" -d '{nope')/$(jq -r .error.type "$TMP/body")" "400/invalid_request_error"
check "invalid json anthropic" eq "$(code "$U/v1/messages" -d '[1')/$(jq -r .error.type "$TMP/body")" "400/invalid_request_error"
check "invalid json gemini" eq "$(code "$U/v1beta/models/g:generateContent" -d 'x')/$(jq -r .error.status "$TMP/body")" "400/INVALID_ARGUMENT"
check "bad fault spec" eq "$(code "$U/v1/chat/completions" -H 'x-mock-fault: explode' -d "$BODY")" 400
head -c $((33 * 1024 * 1024)) /dev/zero | tr '\0' 'a' >"$TMP/big"
check "413 by content-length" eq "$(code "$U/v1/chat/completions" --data-binary @"$TMP/big")/$(jq -r .error.code "$TMP/body")" "413/request_too_large"
check "413 chunked upload" eq "$(code "$U/v1/messages" -H 'transfer-encoding: chunked' --data-binary @"$TMP/big")/$(jq -r .error.type "$TMP/body")" "413/request_too_large"
rm -f "$TMP/big"

# ---------------------------------------------------------------- Fault injection: timing and framing
STREAM='{"model":"mock-5","stream":true,'$USER_HI'}'
T=$(curl -s -o /dev/null -w '%{time_starttransfer}' "$U/v1/chat/completions" -H 'x-mock-fault: delay-headers:400' -d "$BODY")
check "delay-headers" ge "${T/./}" 0400000
T=$(curl -s -N -o "$TMP/body" -w '%{time_total}' "$U/v1/chat/completions" -H 'x-mock-fault: delay-chunks:100' -d "$STREAM")
check "delay-chunks time" ge "${T/./}" 0700000
check "delay-chunks complete" eq "$(tail -2 "$TMP/body" | head -1)" "data: [DONE]"
#  Delays must not block other connections: a delayed and a plain request side by side
curl -s -o /dev/null "$U/v1/chat/completions" -H 'x-mock-fault: delay-headers:1500' -d "$BODY" &
SLOW=$!
T=$(curl -s -o /dev/null -w '%{time_total}' "$U/v1/chat/completions" -d "$BODY")
check "delay does not block others" eq "$(awk -v t="$T" 'BEGIN{print (t < 0.5) ? "yes" : "no"}')" yes
wait "$SLOW"
#  gather:3: each stream sends its first event, then waits until three wait at once
GATHER=()
for n in 1 2; do
    curl -s -N -o "$TMP/gather$n" "$U/v1/chat/completions" -H 'x-mock-fault: gather:3' -d "$STREAM" &
    GATHER+=($!)
done
for _ in $(seq 1 100); do
    [ "$(cat "$TMP/gather1" "$TMP/gather2" 2>/dev/null | grep -c '^data: ')" -ge 2 ] && break
    sleep 0.05
done
sleep 0.3
check "gather holds after the first event" eq "$(cat "$TMP/gather1" "$TMP/gather2" | grep -c '^data: ')" 2
check "gather counts as open" eq "$(curl -s "$U/mock/stats" | jq .open_streams)" 2
T=$(curl -s -N -o "$TMP/gather3" -w '%{time_total}' "$U/v1/chat/completions" -H 'x-mock-fault: gather:3' -d "$STREAM")
wait "${GATHER[@]}"
check "gather: the third lets all three go" eq "$(cat "$TMP"/gather[123] | grep -c '^data: \[DONE\]')" 3
check "gather: the third does not wait" eq "$(awk -v t="$T" 'BEGIN{print (t < 2) ? "yes" : "no"}')" yes

curl -s -N -o "$TMP/body" "$U/v1/chat/completions" -H 'x-mock-fault: cut:3' -d "$STREAM"
check "cut stream exit" eq "$?" 18
check "cut stream events" eq "$(grep -c '^data: ' "$TMP/body")" 3
curl -s -N -o "$TMP/body" "$U/v1/messages" -H 'x-mock-fault: cut:2' -d "$STREAM"
check "cut anthropic exit" eq "$?" 18
curl -s -o "$TMP/body" "$U/v1/chat/completions" -H 'x-mock-fault: cut:1' -d "$BODY"
check "cut body exit" eq "$?" 18
check "cut body half" eq "$(jq . "$TMP/body" >/dev/null 2>&1 && echo valid || echo invalid)" invalid

R=$(post /v1/chat/completions "$BODY" -H 'x-mock-fault: malformed')
check "malformed body" eq "$(jq . <<<"$R" >/dev/null 2>&1 && echo valid || echo invalid)" invalid
R=$(post /v1/chat/completions "$STREAM" -N -H 'x-mock-fault: malformed' | sse_data | grep -v DONE)
check "malformed stream one bad line" eq "$(while read -r l; do jq . <<<"$l" >/dev/null 2>&1 || echo bad; done <<<"$R" | grep -c bad)" 1
R=$(post /v1/chat/completions "$STREAM" -N -H 'x-mock-fault: no-terminator')
check "no-terminator openai" eq "$(grep -c DONE <<<"$R")/$(grep -c '^data: ' <<<"$R")" "0/7"
R=$(post /v1/messages "$STREAM" -N -H 'x-mock-fault: no-terminator')
check "no-terminator anthropic" eq "$(grep -c message_stop <<<"$R")/$(grep -c '^event: message_delta' <<<"$R")" "0/1"
R=$(post /v1/responses "$STREAM" -N -H 'x-mock-fault: no-terminator')
check "no-terminator responses" eq "$(grep -c response.completed <<<"$R")" 0
R=$(post /v1beta/models/mock-3:streamGenerateContent "$GEM" -N -H 'x-mock-fault: no-terminator')
check "no-terminator gemini array" eq "$(jq . <<<"$R" >/dev/null 2>&1 && echo valid || echo invalid)" invalid

FLAP=""
for _ in 1 2 3 4 5 6; do FLAP+="$(code "$U/v1/chat/completions" -d '{"model":"flappy"}') "; done
check "flap:3 static" eq "$FLAP" "200 200 500 200 200 500 "
check "static fault" eq "$(code "$U/v1/chat/completions" -d '{"model":"static-down"}')" 503
check "runtime fault set" eq "$(curl -s "$U/mock/faults" -d '{"model":"rt","fault":"429:7"}' | jq .ok)" true
check "runtime fault applies" eq "$(code "$U/v1/messages" -d '{"model":"rt"}')/$(grep -i '^retry-after:' "$TMP/headers" | tr -d '\r' | cut -d' ' -f2)" "429/7"
check "runtime fault other model" eq "$(code "$U/v1/messages" -d '{"model":"other"}')" 200
check "runtime fault bad spec" eq "$(curl -s -o /dev/null -w '%{http_code}' "$U/mock/faults" -d '{"model":"rt","fault":"zzz"}')" 400
check "runtime fault clear" eq "$(curl -s "$U/mock/faults" -d '{"model":"rt","fault":""}' >/dev/null; code "$U/v1/messages" -d '{"model":"rt"}')" 200
check "header fault wins" eq "$(code "$U/v1/chat/completions" -H 'x-mock-fault: 404' -d '{"model":"static-down"}')" 404

# ---------------------------------------------------------------- Hang, aborts, open streams
curl -s -XPOST "$U/mock/reset" >/dev/null
curl -s -o /dev/null --max-time 0.5 "$U/v1/chat/completions" -H 'x-mock-fault: hang' -d "$BODY"
check "hang holds until client leaves" eq "$?" 28
check "hang abort counted" waitfor '.client_aborts == 1 and .open_streams == 0'
curl -s -N -o /dev/null --max-time 0.5 "$U/v1/messages" -H 'x-mock-fault: delay-chunks:10000' -d "$STREAM"
check "stream abort counted" waitfor '.client_aborts == 2 and .open_streams == 0'
CURLS=()
for _ in $(seq 1 40); do
    curl -s -N -o /dev/null "$U/v1/chat/completions" -H 'x-mock-fault: delay-chunks:200' -H 'x-mock-chunks: 1000' -d "$STREAM" &
    CURLS+=($!)
done
check "40 concurrent streams open" waitfor '.open_streams == 40'
check "completed streams are not aborts" eq "$(curl -s "$U/mock/stats" | jq .client_aborts)" 2
kill "${CURLS[@]}" 2>/dev/null
wait "${CURLS[@]}" 2>/dev/null
check "40 aborts counted" waitfor '.client_aborts == 42 and .open_streams == 0'

# ---------------------------------------------------------------- Stats and reset
curl -s -XPOST "$U/mock/reset" >/dev/null
post /v1/messages '{"model":"claude-y","stream":false,'"$USER_HI"'}' -H 'x-api-key: sk-ant-1' \
    -H 'anthropic-version: 2023-06-01' -H 'anthropic-beta: tools-2024-04-04' >/dev/null
post /v1/chat/completions '{"model":"gpt-x","stream":true,"stream_options":{"include_usage":true},'"$USER_HI"'}' \
    -H 'Authorization: Bearer sk-oai-1' >/dev/null
curl -s "$U/v1beta/models/gemini-z:generateContent?key=g-key" -d "$GEM" >/dev/null
curl -s "$U/v1beta/models/gemini-z:generateContent" -H 'x-goog-api-key: g-key2' -d "$GEM" >/dev/null
S=$(curl -s "$U/mock/stats")
check "stats totals" eq "$(jq -c '[.requests_total,.paths["/v1/messages"],.models["gemini-z"],.statuses["200"]]' <<<"$S")" "[4,1,2,4]"
check "stats keys" eq "$(jq -c '.keys|keys' <<<"$S")" '["g-key","g-key2","sk-ant-1","sk-oai-1"]'
check "stats last" eq "$(jq -c '.last|[.auth_type,.api_key,.model,.stream]' <<<"$S")" '["x-goog-api-key","g-key2","gemini-z",false]'
check "stats last body" eq "$(jq -c '.last.body_json' <<<"$S")" "$(jq -c . <<<"$GEM")"
curl -s -XPOST "$U/mock/reset" >/dev/null
post /v1/messages '{"model":"claude-y","stream":true,'"$USER_HI"'}' -H 'x-api-key: sk-ant-1' \
    -H 'anthropic-version: 2023-06-01' -H 'anthropic-beta: tools-2024-04-04' >/dev/null
check "stats anthropic headers" eq "$(curl -s "$U/mock/stats" | jq -c '.last|[.auth_type,.anthropic_version,.anthropic_beta,.stream,.headers["anthropic-version"]]')" \
    '["x-api-key","2023-06-01","tools-2024-04-04",true,"2023-06-01"]'
post /v1/chat/completions '{"model":"gpt-x","stream":true,"stream_options":{"include_usage":true},'"$USER_HI"'}' \
    -H 'Authorization: Bearer sk-oai-1' >/dev/null
check "stats openai stream_options" eq "$(curl -s "$U/mock/stats" | jq -c '.last|[.auth_type,.api_key,.stream,.stream_options]')" \
    '["bearer","sk-oai-1",true,{"include_usage":true}]'
curl -s -XPOST "$U/mock/reset" >/dev/null
check "reset" eq "$(curl -s "$U/mock/stats" | jq -c '[.requests_total,.client_aborts,.last,(.paths|length),.faults.runtime,.faults.static.flappy]')" \
    '[0,0,null,0,{},"flap:3"]'

# ---------------------------------------------------------------- --require-key
check "key missing openai" eq "$(code "$K/v1/chat/completions" -d "$BODY")/$(jq -r .error.code "$TMP/body")" "401/invalid_api_key"
check "key wrong anthropic" eq "$(code "$K/v1/messages" -H 'x-api-key: nope' -d "$BODY")/$(jq -r .error.type "$TMP/body")" "401/authentication_error"
check "key wrong gemini" eq "$(code "$K/v1beta/models/g:generateContent?key=nope" -d "$GEM")/$(jq -r .error.status "$TMP/body")" "401/UNAUTHENTICATED"
check "key bearer ok" eq "$(code "$K/v1/chat/completions" -H 'Authorization: Bearer s3cret' -d "$BODY")" 200
check "key x-api-key ok" eq "$(code "$K/v1/messages" -H 'x-api-key: s3cret' -d "$BODY")" 200
check "key x-goog-api-key ok" eq "$(code "$K/v1beta/models/g:generateContent" -H 'x-goog-api-key: s3cret' -d "$GEM")" 200
check "key query ok" eq "$(code "$K/v1beta/models/g:generateContent?key=s3cret" -d "$GEM")" 200
check "key models list" eq "$(code "$K/v1/models")" 401
check "mock endpoints need no key" eq "$(code "$K/mock/stats")" 200

# ---------------------------------------------------------------- Clean shutdown with held connections
curl -s -o /dev/null "$U/v1/chat/completions" -H 'x-mock-fault: hang' -d "$BODY" &
HELD=$!
waitfor '.open_streams == 1' >/dev/null
kill -TERM "${PIDS[0]}"
STOPPED=no
for _ in $(seq 1 100); do
    kill -0 "${PIDS[0]}" 2>/dev/null || { STOPPED=yes; break; }
    sleep 0.05
done
check "SIGTERM with a held connection" eq "$STOPPED" yes
wait "${PIDS[0]}"
check "exit status 0" eq "$?" 0
wait "$HELD" 2>/dev/null
kill -TERM "${PIDS[1]}"
wait "${PIDS[1]}"
check "second instance exit status 0" eq "$?" 0
#  When built with -fsanitize=address,undefined, reports land on the mocks' stderr.
check "no sanitizer reports" eq "$(cat "$TMP"/*.err | grep -c -E 'Sanitizer|runtime error')" 0

echo "$((CHECKS - FAILS))/$CHECKS checks passed"
[ "$FAILS" -eq 0 ]
