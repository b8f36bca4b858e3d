-- A live channel's state. ARGV[6] reference.
local id = lookup(ARGV[6])
if not id then
  return reply('missing', {ARGV[6]})
end
return reply('ok', info(id))
