#!/usr/bin/python
# Test helper: sets the fact ansible_facts.architecture to what it is given,
# as a gathered fact would, so a test can make ops' actions dispatch to the
# binary of another machine.

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={"machine": {"type": "str", "required": True}})
    module.exit_json(changed=False, ansible_facts={"architecture": module.params["machine"]})


if __name__ == "__main__":
    main()
