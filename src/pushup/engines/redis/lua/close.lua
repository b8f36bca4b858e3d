-- Close a channel and tell every node. ARGV[6] reference.
local id = lookup(ARGV[6])
if not id then
  return reply('missing', {ARGV[6]})
end
drop({id}, 'closed')
return reply('ok', {})
