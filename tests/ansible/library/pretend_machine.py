#!/usr/bin/python
# Test helper: sets the facts ansible_facts.system and architecture to what
# it is given, as gathered facts would, so a test can make ops' actions
# dispatch to the binary of another machine or system.

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={
        "machine": {"type": "str", "required": True},
        "system": {"type": "str", "default": "Linux"},
    })
    module.exit_json(changed=False, ansible_facts={
        "architecture": module.params["machine"],
        "system": module.params["system"],
    })


if __name__ == "__main__":
    main()
