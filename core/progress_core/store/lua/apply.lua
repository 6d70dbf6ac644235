-- apply.lua: one atomic change to one job (docs/design.md §3-4); mirrors core/progress_core/transitions.py.
-- Checks the transition, writes the hash, appends to the bounded history stream and publishes the
-- complete snapshot, all in one script so no reader ever sees half a change.
--
-- KEYS[1]  job hash        <prefix>:{<id>}:job
-- KEYS[2]  history stream  <prefix>:{<id>}:history
-- KEYS[3]  recent change ids, a sorted set scored by seq: <prefix>:{<id>}:changes
-- ARGV[1]  op: create | start | update | heartbeat | checkpoint | succeed | fail | request_cancel | cancel | attach_call
-- ARGV[2]  channel the snapshot is published on: <prefix>:{<id>}
-- ARGV[3]  retention of a terminal job, seconds
-- ARGV[4]  history length bound (approximate trim)
-- ARGV[5…] the op's arguments, then a change id as the last ARGV:
--   create          id, owner, kind, params_json, executor or "", call_id or ""
--   update          mask ("p", "s", "m" for the fields present), progress, stage, message
--   checkpoint      data_json (kept in the hash's "checkpoint" field, never in the snapshot)
--   succeed         result_json
--   fail            code, message
--   cancel          message
--   attach_call     executor, call_id
--   every op        …, change id (unique per call: a client's retry of the same call sends the
--                   same id; a change id among the job's last 512 is not applied twice)
-- Returns {"ok", snapshot_json, effect, now_ms}  effect: publish | write | none
--      or {"err", code, status}                  code: not_found | job_exists | job_finished | not_running

local job_key, history_key, changes_key = KEYS[1], KEYS[2], KEYS[3]
local op, channel = ARGV[1], ARGV[2]
local retention, history_max = tonumber(ARGV[3]), ARGV[4]
local change_id = ARGV[#ARGV]
-- More than a whole replayed pipeline (redis-py retries a failed pipeline as a whole: up to 4
-- batches of 32 in flight) plus concurrent writers: a replay always finds its ids.
local RECENT_CHANGES = 512

local FIELDS = {'id', 'owner', 'kind', 'status', 'progress', 'stage', 'message', 'seq', 'attempt',
  'created_at', 'updated_at', 'heartbeat_at', 'executor', 'call_id', 'params', 'result', 'error',
  'cancel_requested'}
local TERMINAL = {succeeded = true, failed = true, cancelled = true}

local function iso_time(ms)
  -- civil_from_days (H. Hinnant): Redis Lua has no os.date.
  local secs = math.floor(ms / 1000)
  local days = math.floor(secs / 86400)
  local sod = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400
  if month <= 2 then year = year + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day,
    math.floor(sod / 3600), math.floor(sod % 3600 / 60), sod % 60, ms % 1000)
end

local function json_or_null(value)
  if value then return cjson.encode(value) end
  return 'null'
end

local function snapshot(job)
  return table.concat({
    '{"id":', cjson.encode(job.id),
    ',"owner":', cjson.encode(job.owner),
    ',"kind":', cjson.encode(job.kind),
    ',"status":"', job.status,
    '","progress":', job.progress,
    ',"stage":', json_or_null(job.stage),
    ',"message":', json_or_null(job.message),
    ',"seq":', job.seq,
    ',"attempt":', job.attempt,
    ',"created_at":"', job.created_at,
    '","updated_at":"', job.updated_at,
    '","heartbeat_at":"', job.heartbeat_at,
    '","executor":', json_or_null(job.executor),
    ',"call_id":', json_or_null(job.call_id),
    ',"params":', job.params,
    ',"result":', job.result or 'null',
    ',"error":', job.error or 'null',
    ',"cancel_requested":', job.cancel_requested == '1' and 'true' or 'false',
    '}'})
end

local function error_json(code, message)
  return '{"code":' .. cjson.encode(code) .. ',"message":' .. cjson.encode(message) .. '}'
end

local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local now = iso_time(now_ms)

if op == 'create' then
  if redis.call('EXISTS', job_key) == 1 then
    -- An identical create (a retried call whose reply was lost) returns the job; anything else conflicts.
    local existing = redis.call('HMGET', job_key, 'owner', 'kind', 'params', 'snapshot')
    if existing[1] == ARGV[6] and existing[2] == ARGV[7] and existing[3] == ARGV[8] then
      return {'ok', existing[4], 'none', tostring(now_ms)}
    end
    return {'err', 'job_exists', ''}
  end
  local job = {id = ARGV[5], owner = ARGV[6], kind = ARGV[7], status = 'queued', progress = '0',
    seq = '1', attempt = '0', created_at = now, updated_at = now, heartbeat_at = now,
    params = ARGV[8], cancel_requested = '0'}
  if ARGV[9] ~= '' then job.executor = ARGV[9] end
  if ARGV[10] ~= '' then job.call_id = ARGV[10] end
  local snap = snapshot(job)
  local args = {'snapshot', snap, 'heartbeat_ms', tostring(now_ms)}
  for _, name in ipairs(FIELDS) do
    if job[name] then
      args[#args + 1] = name
      args[#args + 1] = job[name]
    end
  end
  redis.call('HSET', job_key, unpack(args))
  redis.call('XADD', history_key, 'MAXLEN', '~', history_max, '*', 'seq', '1', 'at', now,
    'status', 'queued', 'progress', '0')
  redis.call('PUBLISH', channel, snap)
  return {'ok', snap, 'publish', tostring(now_ms)}
end

local values = redis.call('HMGET', job_key, unpack(FIELDS))
if not values[1] then
  return {'err', 'not_found', ''}
end
local job = {}
for i, name in ipairs(FIELDS) do
  job[name] = values[i]
end

-- A retried call (the reply was lost, the client sent it again) finds its own change id among
-- the job's recent ones and gets the current snapshot instead of applying the change twice. This
-- runs before the terminal check: a retried succeed must not come back as job_finished.
-- (Heartbeats and checkpoints are not recorded: repeating one is harmless.)
if op ~= 'heartbeat' and op ~= 'checkpoint' and redis.call('ZSCORE', changes_key, change_id) then
  return {'ok', redis.call('HGET', job_key, 'snapshot'), 'none', tostring(now_ms)}
end

local changes = {}
local function set(name, value)
  job[name] = value
  changes[#changes + 1] = name
  changes[#changes + 1] = value
end
local function cancelled(message)
  set('status', 'cancelled')
  set('error', error_json('cancelled', message))
end

if op == 'request_cancel' then
  if job.status == 'cancelled' or (job.cancel_requested == '1' and not TERMINAL[job.status]) then
    return {'ok', redis.call('HGET', job_key, 'snapshot'), 'none', tostring(now_ms)}
  end
end
if TERMINAL[job.status] then
  return {'err', 'job_finished', job.status}
end

if op == 'heartbeat' then
  set('heartbeat_at', now)
  local snap = snapshot(job)
  redis.call('HSET', job_key, 'snapshot', snap, 'heartbeat_ms', tostring(now_ms), unpack(changes))
  return {'ok', snap, 'write', tostring(now_ms)}
elseif op == 'checkpoint' then
  if job.status ~= 'running' then
    return {'err', 'not_running', job.status}
  end
  set('heartbeat_at', now)
  local snap = snapshot(job)
  redis.call('HSET', job_key, 'snapshot', snap, 'heartbeat_ms', tostring(now_ms), 'checkpoint', ARGV[5],
    unpack(changes))
  return {'ok', snap, 'write', tostring(now_ms)}
elseif op == 'start' then
  set('status', 'running')
  set('attempt', tostring(tonumber(job.attempt) + 1))
  set('heartbeat_at', now)
elseif op == 'update' then
  local mask = ARGV[5]
  set('status', 'running')
  set('heartbeat_at', now)
  if string.find(mask, 'p', 1, true) and tonumber(ARGV[6]) > tonumber(job.progress) then
    set('progress', ARGV[6])
  end
  if string.find(mask, 's', 1, true) then set('stage', ARGV[7]) end
  if string.find(mask, 'm', 1, true) then set('message', ARGV[8]) end
elseif op == 'succeed' then
  set('status', 'succeeded')
  set('progress', '100')
  set('result', ARGV[5])
  set('heartbeat_at', now)
elseif op == 'fail' then
  set('status', 'failed')
  set('error', error_json(ARGV[5], ARGV[6]))
  set('heartbeat_at', now)
elseif op == 'cancel' then
  cancelled(ARGV[5])
elseif op == 'request_cancel' then
  set('cancel_requested', '1')
  if job.status == 'queued' then cancelled('cancelled before it started') end
elseif op == 'attach_call' then
  set('executor', ARGV[5])
  set('call_id', ARGV[6])
else
  return redis.error_reply('apply.lua: unknown op ' .. tostring(op))
end

set('seq', tostring(tonumber(job.seq) + 1))
set('updated_at', now)
if job.heartbeat_at == now then
  set('heartbeat_ms', tostring(now_ms))
end
local snap = snapshot(job)
redis.call('HSET', job_key, 'snapshot', snap, unpack(changes))
local entry = {'seq', job.seq, 'at', now, 'status', job.status, 'progress', job.progress}
if job.stage then
  entry[#entry + 1] = 'stage'
  entry[#entry + 1] = job.stage
end
if job.message then
  entry[#entry + 1] = 'message'
  entry[#entry + 1] = job.message
end
redis.call('XADD', history_key, 'MAXLEN', '~', history_max, '*', unpack(entry))
redis.call('ZADD', changes_key, job.seq, change_id)
redis.call('ZREMRANGEBYRANK', changes_key, 0, -(RECENT_CHANGES + 1))
if TERMINAL[job.status] then
  redis.call('EXPIRE', job_key, retention)
  redis.call('EXPIRE', history_key, retention)
  redis.call('EXPIRE', changes_key, retention)
end
redis.call('PUBLISH', channel, snap)
return {'ok', snap, 'publish', tostring(now_ms)}
